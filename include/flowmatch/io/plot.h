#pragma once
/// \file
/// Small PNG plots for people to look at: scatter plots, trajectories and line curves,
/// with axes, tick labels and a legend; heatmaps with a colour bar. Drawn by cairo (anti-aliased,
/// DejaVu Sans text), encoded by stb_image_write and written atomically.

#include <array>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace flowmatch::io {

using Color = std::array<unsigned char, 3>;

struct PlotStyle {
  int width = 640;
  int height = 640;
  std::string title;
  /// Data range; when lo == hi it is taken from the data (with a margin).
  double x_lo = 0, x_hi = 0, y_lo = 0, y_hi = 0;
};

/// One labelled set of 2-D points (n, 2).
struct ScatterSeries {
  at::Tensor points;
  Color color;
  std::string label;
  float alpha = 0.35f;
};

/// Scatter plot of several series (drawn in order, later over earlier).
void write_scatter_png(const std::string& path, const std::vector<ScatterSeries>& series,
                       const PlotStyle& style);

/// Trajectories: a (T, n, 2) tensor of states over time, drawn as polylines from the first
/// state (source, blue dots) to the last (end points, red dots).
void write_trajectories_png(const std::string& path, const at::Tensor& states,
                            const PlotStyle& style);

/// One line series y(x).
struct LineSeries {
  std::vector<double> x;
  std::vector<double> y;
  Color color;
  std::string label;
};

/// Line plot; with log_y (log_x) the y (x) axis is logarithmic (non-positive values are skipped).
void write_line_png(const std::string& path, const std::vector<LineSeries>& series,
                    const PlotStyle& style, bool log_y = false, bool log_x = false);

/// A scalar field on a regular grid: values (rows, cols), row 0 at y_lo, column 0 at x_lo.
struct Heatmap {
  at::Tensor values;
  double x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;
  /// Colour range; when v_lo >= v_hi it is the finite values' min and max. Shown by the colour bar.
  double v_lo = 0, v_hi = 0;
  std::string title;
};

/// Heatmaps side by side (each style.width × style.height, viridis colours with a colour bar,
/// non-finite cells drawn as the lowest colour).
void write_heatmaps_png(const std::string& path, const std::vector<Heatmap>& panels, const PlotStyle& style);

/// A grid of images: `images` (N, C, H, W) uint8 with C = 1 (grey) or 3 (RGB), `columns` per row,
/// each pixel drawn as scale × scale, a 2-pixel gap; `row_labels` (optional, one per row) are written
/// to the left of the rows and `title` above. Throws std::invalid_argument on a bad shape or dtype.
void write_image_grid_png(const std::string& path, const at::Tensor& images, int64_t columns, int scale = 3,
                          const std::vector<std::string>& row_labels = {}, const std::string& title = "");
/// Encodes an RGB image (height × width × 3 bytes) as PNG bytes.
std::string encode_png(const std::vector<unsigned char>& rgb, int width, int height);

}  // namespace flowmatch::io
