#include "flowmatch/io/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include <ATen/ATen.h>
#include <stb_image_write.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

#include "flowmatch/io/atomic_file.h"

namespace flowmatch::io {

namespace {

// Layout of every plot: a white canvas, the data area inside fixed margins.
constexpr int kLeft = 72, kRight = 16, kTop = 34, kBottom = 44;
constexpr int kTextScale = 2;

struct Canvas {
  int w, h;
  std::vector<float> rgb;  // in [0, 1]
  Canvas(int width, int height) : w(width), h(height), rgb(static_cast<size_t>(width * height * 3), 1.0f) {}

  void blend(int x, int y, const Color& c, float alpha) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    float* p = &rgb[static_cast<size_t>((y * w + x) * 3)];
    for (int k = 0; k < 3; ++k) p[k] = p[k] * (1 - alpha) + (c[k] / 255.0f) * alpha;
  }
  void rect(int x0, int y0, int x1, int y1, const Color& c, float alpha = 1.0f) {
    for (int y = std::max(0, y0); y < std::min(h, y1); ++y)
      for (int x = std::max(0, x0); x < std::min(w, x1); ++x) blend(x, y, c, alpha);
  }
  void line(double x0, double y0, double x1, double y1, const Color& c, float alpha) {
    const double len = std::max(std::fabs(x1 - x0), std::fabs(y1 - y0));
    const int n = std::max(1, static_cast<int>(std::ceil(len)));
    for (int k = 0; k <= n; ++k) {
      const double s = static_cast<double>(k) / n;
      blend(static_cast<int>(std::lround(x0 + s * (x1 - x0))), static_cast<int>(std::lround(y0 + s * (y1 - y0))), c, alpha);
    }
  }
  void dot(double x, double y, const Color& c, float alpha, int radius = 1) {
    const int cx = static_cast<int>(std::lround(x)), cy = static_cast<int>(std::lround(y));
    for (int dy = -radius; dy <= radius; ++dy)
      for (int dx = -radius; dx <= radius; ++dx)
        if (dx * dx + dy * dy <= radius * radius + radius) blend(cx + dx, cy + dy, c, alpha);
  }
  // Text with stb_easy_font (its quads are axis-aligned rectangles), scaled up.
  int text(int x, int y, const std::string& s, const Color& c) {
    static thread_local std::vector<char> buffer(1 << 16);
    std::vector<char> str(s.begin(), s.end());
    str.push_back('\0');
    unsigned char col[4] = {c[0], c[1], c[2], 255};
    const int quads = stb_easy_font_print(0, 0, str.data(), col, buffer.data(), static_cast<int>(buffer.size()));
    for (int q = 0; q < quads; ++q) {
      const float* v = reinterpret_cast<const float*>(buffer.data() + q * 64);
      const float qx0 = v[0], qy0 = v[1], qx1 = v[8], qy1 = v[9];
      rect(x + static_cast<int>(qx0 * kTextScale), y + static_cast<int>(qy0 * kTextScale),
           x + static_cast<int>(qx1 * kTextScale), y + static_cast<int>(qy1 * kTextScale), c);
    }
    return stb_easy_font_width(str.data()) * kTextScale;
  }
  int text_width(const std::string& s) {
    std::vector<char> str(s.begin(), s.end());
    str.push_back('\0');
    return stb_easy_font_width(str.data()) * kTextScale;
  }
  std::vector<unsigned char> bytes() const {
    std::vector<unsigned char> out(rgb.size());
    for (size_t k = 0; k < rgb.size(); ++k) out[k] = static_cast<unsigned char>(std::clamp(rgb[k], 0.0f, 1.0f) * 255.0f + 0.5f);
    return out;
  }
};

const Color kBlack{0, 0, 0}, kGrey{150, 150, 150}, kLight{228, 228, 228};

double nice_step(double span, int target_ticks) {
  const double raw = span / std::max(1, target_ticks);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

std::string format_tick(double v, double step) {
  char buf[32];
  if (std::fabs(v) < step * 1e-6) v = 0;
  if (std::fabs(v) >= 1e5 || (std::fabs(v) < 1e-3 && v != 0)) {
    std::snprintf(buf, sizeof buf, "%.0e", v);
  } else {
    const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  }
  return buf;
}

// Maps data coordinates into the plot area and draws frame, grid, ticks, title and legend.
struct Axes {
  Canvas& c;
  double xlo, xhi, ylo, yhi;
  bool log_y = false;
  bool log_x = false;  // xlo, xhi are then log10 of the data range
  int px0() const { return kLeft; }
  int px1() const { return c.w - kRight; }
  int py0() const { return kTop; }
  int py1() const { return c.h - kBottom; }
  double X(double x) const { return px0() + (x - xlo) / (xhi - xlo) * (px1() - px0()); }
  double Y(double y) const { return py1() - (y - ylo) / (yhi - ylo) * (py1() - py0()); }
  bool inside(double x, double y) const { return x >= px0() && x <= px1() && y >= py0() && y <= py1(); }

  void frame(const std::string& title) {
    if (log_x) {  // ticks at 1, 2, 5 × powers of ten
      for (double e = std::floor(xlo); e <= xhi + 1e-9; e += 1) {
        for (double m : {1.0, 2.0, 5.0}) {
          const double v = e + std::log10(m);
          if (v < xlo - 1e-9 || v > xhi + 1e-9) continue;
          const int x = static_cast<int>(std::lround(X(v)));
          c.rect(x, py0(), x + 1, py1(), kLight);
          c.rect(x, py1(), x + 1, py1() + 5, kBlack);
          char buf[24];
          std::snprintf(buf, sizeof buf, "%g", m * std::pow(10.0, e));
          c.text(x - c.text_width(buf) / 2, py1() + 9, buf, kBlack);
        }
      }
    } else {
      const double xs = nice_step(xhi - xlo, 6);
      for (double v = std::ceil(xlo / xs) * xs; v <= xhi + 1e-9 * xs; v += xs) {
        const int x = static_cast<int>(std::lround(X(v)));
        c.rect(x, py0(), x + 1, py1(), kLight);
        c.rect(x, py1(), x + 1, py1() + 5, kBlack);
        const std::string label = format_tick(v, xs);
        c.text(x - c.text_width(label) / 2, py1() + 9, label, kBlack);
      }
    }
    if (log_y) {
      for (double e = std::ceil(ylo); e <= yhi + 1e-9; e += 1) {
        const int y = static_cast<int>(std::lround(Y(e)));
        c.rect(px0(), y, px1(), y + 1, kLight);
        c.rect(px0() - 5, y, px0(), y + 1, kBlack);
        char buf[16];
        std::snprintf(buf, sizeof buf, "1e%d", static_cast<int>(e));
        c.text(px0() - 8 - c.text_width(buf), y - 6, buf, kBlack);
      }
    } else {
      const double ys = nice_step(yhi - ylo, 6);
      for (double v = std::ceil(ylo / ys) * ys; v <= yhi + 1e-9 * ys; v += ys) {
        const int y = static_cast<int>(std::lround(Y(v)));
        c.rect(px0(), y, px1(), y + 1, kLight);
        c.rect(px0() - 5, y, px0(), y + 1, kBlack);
        const std::string label = format_tick(v, ys);
        c.text(px0() - 8 - c.text_width(label), y - 6, label, kBlack);
      }
    }
    c.rect(px0(), py0(), px1(), py0() + 1, kBlack);
    c.rect(px0(), py1(), px1() + 1, py1() + 1, kBlack);
    c.rect(px0(), py0(), px0() + 1, py1(), kBlack);
    c.rect(px1(), py0(), px1() + 1, py1(), kBlack);
    if (!title.empty()) c.text(px0(), 8, title, kBlack);
  }

  void legend(const std::vector<std::pair<std::string, Color>>& entries) {
    int y = py0() + 8;
    int width = 0;
    for (const auto& e : entries) width = std::max(width, c.text_width(e.first));
    const int x = px1() - width - 34;
    if (!entries.empty()) c.rect(x - 6, y - 6, px1() - 6, y + static_cast<int>(entries.size()) * 22, {255, 255, 255}, 0.85f);
    for (const auto& e : entries) {
      c.rect(x, y + 2, x + 12, y + 14, e.second);
      c.text(x + 18, y, e.first, kBlack);
      y += 22;
    }
  }
};

void check_points(const at::Tensor& points, const char* who) {
  if (!points.defined() || points.dim() != 2 || points.size(1) != 2) {
    throw std::invalid_argument(std::string(who) + ": points must have shape (n, 2)");
  }
}

void auto_range(const std::vector<at::Tensor>& sets, PlotStyle& s) {
  if (s.x_lo != s.x_hi && s.y_lo != s.y_hi) return;
  double xl = 1e300, xh = -1e300, yl = 1e300, yh = -1e300;
  for (const auto& p : sets) {
    at::Tensor d = p.to(at::kCPU, at::kDouble).reshape({-1, 2});
    at::Tensor finite = at::isfinite(d).all(1);
    d = d.index({finite});
    if (d.size(0) == 0) continue;
    // Robust range: 0.5% and 99.5% quantiles, so a few strays do not squash the picture.
    at::Tensor q = at::quantile(d, at::tensor({0.005, 0.995}, at::kDouble), 0);
    xl = std::min(xl, q[0][0].item<double>());
    xh = std::max(xh, q[1][0].item<double>());
    yl = std::min(yl, q[0][1].item<double>());
    yh = std::max(yh, q[1][1].item<double>());
  }
  if (xl > xh) xl = -1, xh = 1, yl = -1, yh = 1;
  // Equal aspect: same span on both axes.
  const double span = std::max({xh - xl, yh - yl, 1e-6}) * 1.1;
  const double cx = (xl + xh) / 2, cy = (yl + yh) / 2;
  s.x_lo = cx - span / 2, s.x_hi = cx + span / 2, s.y_lo = cy - span / 2, s.y_hi = cy + span / 2;
}

void write_canvas(const std::string& path, const Canvas& c) {
  write_file_atomic(path, encode_png(c.bytes(), c.w, c.h));
}

}  // namespace

void write_image_grid_png(const std::string& path, const at::Tensor& images, int64_t columns, int scale,
                          const std::vector<std::string>& row_labels, const std::string& title) {
  if (!images.defined() || images.dim() != 4 || images.size(0) < 1 || (images.size(1) != 1 && images.size(1) != 3) ||
      images.scalar_type() != at::kByte) {
    throw std::invalid_argument("write_image_grid_png: expected uint8 images (N, 1 or 3, H, W), got " +
                                (images.defined() ? std::string(c10::toString(images.scalar_type())) + " " + c10::str(images.sizes()) : std::string("undefined")));
  }
  if (columns < 1 || scale < 1 || scale > 64) {
    throw std::invalid_argument("write_image_grid_png: columns must be >= 1 and scale in [1, 64], got " + std::to_string(columns) +
                                " and " + std::to_string(scale));
  }
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const int64_t rows = (n + columns - 1) / columns;
  if (!row_labels.empty() && static_cast<int64_t>(row_labels.size()) != rows) {
    throw std::invalid_argument("write_image_grid_png: " + std::to_string(row_labels.size()) + " row labels for " + std::to_string(rows) + " rows");
  }
  constexpr int kGap = 2;
  Canvas probe(1, 1);
  int left = kGap;
  for (const auto& label : row_labels) left = std::max(left, probe.text_width(label) + 12);
  const int top = title.empty() ? kGap : 30;
  const int cell_w = static_cast<int>(w) * scale, cell_h = static_cast<int>(h) * scale;
  const int width = left + static_cast<int>(columns) * (cell_w + kGap), height = top + static_cast<int>(rows) * (cell_h + kGap);
  if (static_cast<int64_t>(width) * height > (int64_t{1} << 28)) throw std::invalid_argument("write_image_grid_png: the grid is too large");
  Canvas canvas(width, height);
  if (!title.empty()) canvas.text(8, 8, title, kBlack);
  at::Tensor pixels = images.contiguous();
  const uint8_t* data = pixels.data_ptr<uint8_t>();
  for (int64_t k = 0; k < n; ++k) {
    const int x0 = left + static_cast<int>(k % columns) * (cell_w + kGap), y0 = top + static_cast<int>(k / columns) * (cell_h + kGap);
    for (int64_t y = 0; y < h; ++y) {
      for (int64_t x = 0; x < w; ++x) {
        Color colour;
        for (int64_t ch = 0; ch < 3; ++ch) colour[ch] = data[((k * c + (c == 1 ? 0 : ch)) * h + y) * w + x];
        canvas.rect(x0 + static_cast<int>(x) * scale, y0 + static_cast<int>(y) * scale, x0 + static_cast<int>(x + 1) * scale,
                    y0 + static_cast<int>(y + 1) * scale, colour);
      }
    }
  }
  for (size_t r = 0; r < row_labels.size(); ++r) {
    canvas.text(6, top + static_cast<int>(r) * (cell_h + kGap) + cell_h / 2 - 6, row_labels[r], kBlack);
  }
  write_canvas(path, canvas);
}

std::string encode_png(const std::vector<unsigned char>& rgb, int width, int height) {
  if (width <= 0 || height <= 0 || rgb.size() != static_cast<size_t>(width) * height * 3) {
    throw std::invalid_argument("encode_png: buffer does not match " + std::to_string(width) + "x" + std::to_string(height));
  }
  std::string out;
  auto sink = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
  };
  if (stbi_write_png_to_func(sink, &out, width, height, 3, rgb.data(), width * 3) == 0) {
    throw std::runtime_error("encode_png: stb_image_write failed");
  }
  return out;
}

void write_scatter_png(const std::string& path, const std::vector<ScatterSeries>& series, const PlotStyle& style) {
  PlotStyle s = style;
  std::vector<at::Tensor> sets;
  for (const auto& ser : series) {
    check_points(ser.points, "write_scatter_png");
    sets.push_back(ser.points);
  }
  auto_range(sets, s);
  Canvas c(s.width, s.height);
  Axes ax{c, s.x_lo, s.x_hi, s.y_lo, s.y_hi};
  ax.frame(s.title);
  std::vector<std::pair<std::string, Color>> legend;
  for (const auto& ser : series) {
    at::Tensor p = ser.points.to(at::kCPU, at::kDouble).contiguous();
    const double* d = p.data_ptr<double>();
    for (int64_t i = 0; i < p.size(0); ++i) {
      const double x = ax.X(d[2 * i]), y = ax.Y(d[2 * i + 1]);
      if (std::isfinite(x) && std::isfinite(y) && ax.inside(x, y)) c.dot(x, y, ser.color, ser.alpha);
    }
    if (!ser.label.empty()) legend.emplace_back(ser.label, ser.color);
  }
  ax.legend(legend);
  write_canvas(path, c);
}

void write_trajectories_png(const std::string& path, const at::Tensor& states, const PlotStyle& style) {
  if (!states.defined() || states.dim() != 3 || states.size(2) != 2 || states.size(0) < 2) {
    throw std::invalid_argument("write_trajectories_png: states must have shape (T >= 2, n, 2)");
  }
  PlotStyle s = style;
  auto_range({states.reshape({-1, 2})}, s);
  Canvas c(s.width, s.height);
  Axes ax{c, s.x_lo, s.x_hi, s.y_lo, s.y_hi};
  ax.frame(s.title);
  at::Tensor p = states.to(at::kCPU, at::kDouble).contiguous();
  const int64_t T = p.size(0), n = p.size(1);
  auto at_ = [&](int64_t k, int64_t i, int dim) { return p.data_ptr<double>()[(k * n + i) * 2 + dim]; };
  const Color path_color{110, 110, 110}, start{31, 119, 180}, end{214, 39, 40};
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k + 1 < T; ++k)
      c.line(ax.X(at_(k, i, 0)), ax.Y(at_(k, i, 1)), ax.X(at_(k + 1, i, 0)), ax.Y(at_(k + 1, i, 1)), path_color, 0.25f);
  for (int64_t i = 0; i < n; ++i) {
    c.dot(ax.X(at_(0, i, 0)), ax.Y(at_(0, i, 1)), start, 0.8f);
    c.dot(ax.X(at_(T - 1, i, 0)), ax.Y(at_(T - 1, i, 1)), end, 0.8f);
  }
  ax.legend({{"source (t=0)", start}, {"end (t=1)", end}, {"path", path_color}});
  write_canvas(path, c);
}

void write_line_png(const std::string& path, const std::vector<LineSeries>& series, const PlotStyle& style, bool log_y, bool log_x) {
  double xl = 1e300, xh = -1e300, yl = 1e300, yh = -1e300;
  auto ty = [&](double y) { return log_y ? std::log10(y) : y; };
  auto tx = [&](double x) { return log_x ? std::log10(x) : x; };
  auto usable = [&](double x, double y) {
    return std::isfinite(x) && std::isfinite(y) && (!log_y || y > 0) && (!log_x || x > 0);
  };
  for (const auto& ser : series) {
    if (ser.x.size() != ser.y.size()) throw std::invalid_argument("write_line_png: x and y differ in length");
    for (size_t k = 0; k < ser.x.size(); ++k) {
      if (!usable(ser.x[k], ser.y[k])) continue;
      xl = std::min(xl, tx(ser.x[k])), xh = std::max(xh, tx(ser.x[k]));
      yl = std::min(yl, ty(ser.y[k])), yh = std::max(yh, ty(ser.y[k]));
    }
  }
  if (xl > xh) xl = 0, xh = 1, yl = 0, yh = 1;
  if (xh == xl) xh = xl + 1;
  if (yh == yl) yh = yl + 1;
  if (log_y) {
    yl = std::floor(yl), yh = std::ceil(yh);
    if (yh == yl) yh = yl + 1;
  } else {
    const double pad = (yh - yl) * 0.05;
    yl -= pad, yh += pad;
  }
  PlotStyle s = style;
  Canvas c(s.width, s.height);
  if (log_x) {
    const double pad = (xh - xl) * 0.03;
    xl -= pad, xh += pad;
  }
  Axes ax{c, xl, xh, yl, yh, log_y, log_x};
  ax.frame(s.title);
  std::vector<std::pair<std::string, Color>> legend;
  for (const auto& ser : series) {
    bool have = false;
    double px = 0, py = 0;
    for (size_t k = 0; k < ser.x.size(); ++k) {
      if (!usable(ser.x[k], ser.y[k])) {
        have = false;
        continue;
      }
      const double x = ax.X(tx(ser.x[k])), y = ax.Y(ty(ser.y[k]));
      if (have) {
        c.line(px, py, x, y, ser.color, 0.9f);
        c.line(px, py + 1, x, y + 1, ser.color, 0.5f);
      }
      px = x, py = y, have = true;
    }
    if (ser.x.size() < 40)
      for (size_t k = 0; k < ser.x.size(); ++k)
        if (usable(ser.x[k], ser.y[k])) c.dot(ax.X(tx(ser.x[k])), ax.Y(ty(ser.y[k])), ser.color, 1.0f, 2);
    if (!ser.label.empty()) legend.emplace_back(ser.label, ser.color);
  }
  ax.legend(legend);
  write_canvas(path, c);
}

namespace {

// A perceptually ordered colormap (viridis' end points and three inner stops), linear between stops.
Color colormap(double s) {
  static const double stops[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  s = std::clamp(s, 0.0, 1.0) * 4;
  const int k = std::min(3, static_cast<int>(s));
  const double f = s - k;
  Color c;
  for (int i = 0; i < 3; ++i) c[i] = static_cast<unsigned char>(std::lround(stops[k][i] * (1 - f) + stops[k + 1][i] * f));
  return c;
}

}  // namespace

void write_heatmaps_png(const std::string& path, const std::vector<Heatmap>& panels, const PlotStyle& style) {
  if (panels.empty()) throw std::invalid_argument("write_heatmaps_png: no panels");
  std::vector<Canvas> canvases;
  for (const auto& panel : panels) {
    if (!panel.values.defined() || panel.values.dim() != 2 || panel.values.size(0) < 1 || panel.values.size(1) < 1) {
      throw std::invalid_argument("write_heatmaps_png: values must be a non-empty (rows, cols) tensor");
    }
    if (!(panel.x_hi > panel.x_lo) || !(panel.y_hi > panel.y_lo)) {
      throw std::invalid_argument("write_heatmaps_png: the panel's range is empty");
    }
    at::Tensor v = panel.values.to(at::kCPU, at::kDouble).contiguous();
    at::Tensor finite = v.index({at::isfinite(v)});
    double lo = panel.v_lo, hi = panel.v_hi;
    if (!(hi > lo)) {
      lo = finite.numel() ? finite.min().item<double>() : 0.0;
      hi = finite.numel() ? finite.max().item<double>() : 1.0;
      if (!(hi > lo)) hi = lo + 1;
    }
    Canvas c(style.width, style.height);
    Axes ax{c, panel.x_lo, panel.x_hi, panel.y_lo, panel.y_hi};
    const int64_t rows = v.size(0), cols = v.size(1);
    const double* data = v.data_ptr<double>();
    for (int py = ax.py0(); py < ax.py1(); ++py) {
      for (int px = ax.px0(); px < ax.px1(); ++px) {
        // Pixel centre in data units, then the nearest cell (row 0 is the bottom, y = y_lo).
        const double x = panel.x_lo + (px + 0.5 - ax.px0()) / (ax.px1() - ax.px0()) * (panel.x_hi - panel.x_lo);
        const double y = panel.y_lo + (ax.py1() - py - 0.5) / (ax.py1() - ax.py0()) * (panel.y_hi - panel.y_lo);
        const int64_t j = std::clamp<int64_t>(static_cast<int64_t>((x - panel.x_lo) / (panel.x_hi - panel.x_lo) * cols), 0, cols - 1);
        const int64_t i = std::clamp<int64_t>(static_cast<int64_t>((y - panel.y_lo) / (panel.y_hi - panel.y_lo) * rows), 0, rows - 1);
        const double value = data[i * cols + j];
        c.blend(px, py, std::isfinite(value) ? colormap((value - lo) / (hi - lo)) : colormap(0), 1.0f);
      }
    }
    char range[96];
    std::snprintf(range, sizeof range, " [%.3g, %.3g]", lo, hi);
    ax.frame(panel.title + range);
    canvases.push_back(std::move(c));
  }
  // Side by side, one canvas wide per panel.
  Canvas out(style.width * static_cast<int>(canvases.size()), style.height);
  for (size_t k = 0; k < canvases.size(); ++k)
    for (int y = 0; y < style.height; ++y)
      std::copy_n(&canvases[k].rgb[static_cast<size_t>(y * style.width * 3)], style.width * 3,
                  &out.rgb[static_cast<size_t>((y * out.w + static_cast<int>(k) * style.width) * 3)]);
  write_canvas(path, out);
}

}  // namespace flowmatch::io
