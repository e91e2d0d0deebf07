#include "flowmatch/io/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>

#include <ATen/ATen.h>
#include <cairo.h>
#include <stb_image_write.h>

#include "flowmatch/io/atomic_file.h"

namespace flowmatch::io {

namespace {

// Layout of every plot: a white canvas, the data area inside fixed margins (pixels).
constexpr int kLeft = 70, kRight = 18, kTop = 34, kBottom = 42;
constexpr double kTickFont = 12.5, kTitleFont = 15, kLegendFont = 13;
// Space a colour bar takes right of a heatmap's data area: gap, bar, tick labels.
constexpr int kBarGap = 12, kBarWidth = 14, kBarLabels = 58;

const Color kBlack{0, 0, 0}, kGrid{232, 232, 232}, kFrame{60, 60, 60};
constexpr int kMaxSide = 32767;  // cairo's largest image side
constexpr int kMaxTicks = 64;    // per axis: a range too narrow for its magnitude gets no more

// Text as cairo needs it: valid UTF-8 (an invalid byte, e.g. from a folder name or a cut string,
// becomes '?'; cairo would otherwise stop drawing the whole picture).
std::string valid_utf8(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 0x2;
    if (ok && n == 2) ok = c >= 0xC2;  // no overlong forms of ASCII
    if (ok) {
      out.append(s, i, n);
      i += n;
    } else {
      out += '?';
      ++i;
    }
  }
  return out;
}

// A cairo image surface (anti-aliased shapes, DejaVu Sans text through fontconfig) turned into
// RGB bytes and encoded by stb_image_write, so that the file is written atomically by us.
class Canvas {
 public:
  Canvas(int width, int height) : w(width), h(height) {
    if (width < 1 || height < 1 || width > kMaxSide || height > kMaxSide || static_cast<int64_t>(width) * height > (int64_t{1} << 28)) {
      throw std::invalid_argument("plot: a picture of " + std::to_string(width) + "x" + std::to_string(height) +
                                  " pixels (each side 1 to 32767, at most 2^28 pixels)");
    }
    surface_ = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
    cr_ = cairo_create(surface_);
    if (cairo_status(cr_) != CAIRO_STATUS_SUCCESS) {
      const std::string why = cairo_status_to_string(cairo_status(cr_));
      release();
      throw std::runtime_error("plot: cairo could not make a " + std::to_string(width) + "x" + std::to_string(height) +
                               " canvas: " + why);
    }
    cairo_set_source_rgb(cr_, 1, 1, 1);
    cairo_paint(cr_);
    cairo_select_font_face(cr_, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  }
  Canvas(const Canvas&) = delete;
  Canvas& operator=(const Canvas&) = delete;
  ~Canvas() { release(); }

  const int w, h;
  cairo_t* cr() const { return cr_; }

  void colour(const Color& c, double alpha = 1.0) { cairo_set_source_rgba(cr_, c[0] / 255.0, c[1] / 255.0, c[2] / 255.0, alpha); }
  void rect(double x0, double y0, double x1, double y1, const Color& c, double alpha = 1.0) {
    colour(c, alpha);
    cairo_rectangle(cr_, x0, y0, x1 - x0, y1 - y0);
    cairo_fill(cr_);
  }
  // A 1-pixel rectangle outline on the pixel grid, corner (x, y), size w × h.
  void outline(double x, double y, double w, double h, const Color& c) {
    colour(c);
    cairo_set_line_width(cr_, 1.0);
    cairo_rectangle(cr_, std::floor(x) + 0.5, std::floor(y) + 0.5, w, h);
    cairo_stroke(cr_);
  }
  // A crisp 1-pixel line along whole pixels (grid lines, ticks, frame).
  void hairline(double x0, double y0, double x1, double y1, const Color& c) {
    colour(c);
    cairo_set_line_width(cr_, 1.0);
    cairo_move_to(cr_, std::floor(x0) + 0.5, std::floor(y0) + 0.5);
    cairo_line_to(cr_, std::floor(x1) + 0.5, std::floor(y1) + 0.5);
    cairo_stroke(cr_);
  }
  void dot(double x, double y, const Color& c, double alpha, double radius = 1.7) {
    colour(c, alpha);
    cairo_new_sub_path(cr_);
    cairo_arc(cr_, x, y, radius, 0, 2 * M_PI);
    cairo_fill(cr_);
  }
  // One stroked polyline (joints drawn once, so a translucent line has an even tone).
  void polyline(const std::vector<double>& xy, const Color& c, double alpha, double width) {
    if (xy.size() < 4) return;
    colour(c, alpha);
    cairo_set_line_width(cr_, width);
    cairo_set_line_join(cr_, CAIRO_LINE_JOIN_ROUND);
    cairo_set_line_cap(cr_, CAIRO_LINE_CAP_ROUND);
    cairo_move_to(cr_, xy[0], xy[1]);
    for (size_t k = 2; k + 1 < xy.size(); k += 2) cairo_line_to(cr_, xy[k], xy[k + 1]);
    cairo_stroke(cr_);
  }
  double text_width(const std::string& s, double size) {
    cairo_set_font_size(cr_, size);
    cairo_text_extents_t e;
    cairo_text_extents(cr_, valid_utf8(s).c_str(), &e);
    return e.x_advance;
  }
  // Text whose top is at y; align 0 = left at x, 0.5 = centred on x, 1 = right at x. Returns its width.
  double text(double x, double y, const std::string& s, const Color& c, double size = kTickFont, double align = 0.0,
              bool bold = false) {
    cairo_select_font_face(cr_, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    const double width = text_width(s, size);
    cairo_font_extents_t f;
    cairo_font_extents(cr_, &f);
    colour(c);
    cairo_move_to(cr_, x - align * width, y + f.ascent);
    cairo_show_text(cr_, valid_utf8(s).c_str());
    cairo_new_path(cr_);
    if (bold) cairo_select_font_face(cr_, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    return width;
  }
  // An RGB image (rows × cols × 3 bytes) drawn into the rectangle, each cell a sharp block.
  void image(const std::vector<unsigned char>& rgb, int cols, int rows, double x0, double y0, double x1, double y1) {
    cairo_surface_t* cells = cairo_image_surface_create(CAIRO_FORMAT_RGB24, cols, rows);
    if (cairo_surface_status(cells) != CAIRO_STATUS_SUCCESS) {
      cairo_surface_destroy(cells);
      throw std::runtime_error("plot: cairo could not make a " + std::to_string(cols) + "x" + std::to_string(rows) + " image");
    }
    cairo_surface_flush(cells);
    unsigned char* data = cairo_image_surface_get_data(cells);
    const int stride = cairo_image_surface_get_stride(cells);
    for (int y = 0; y < rows; ++y) {
      auto* row = reinterpret_cast<uint32_t*>(data + static_cast<ptrdiff_t>(y) * stride);
      for (int x = 0; x < cols; ++x) {
        const unsigned char* p = &rgb[(static_cast<size_t>(y) * cols + x) * 3];
        row[x] = (uint32_t{p[0]} << 16) | (uint32_t{p[1]} << 8) | uint32_t{p[2]};
      }
    }
    cairo_surface_mark_dirty(cells);
    cairo_save(cr_);
    cairo_rectangle(cr_, x0, y0, x1 - x0, y1 - y0);
    cairo_clip(cr_);
    cairo_translate(cr_, x0, y0);
    cairo_scale(cr_, (x1 - x0) / cols, (y1 - y0) / rows);
    cairo_set_source_surface(cr_, cells, 0, 0);
    cairo_pattern_set_filter(cairo_get_source(cr_), CAIRO_FILTER_NEAREST);
    cairo_paint(cr_);
    cairo_restore(cr_);
    cairo_surface_destroy(cells);
  }
  std::vector<unsigned char> bytes() const {
    if (cairo_status(cr_) != CAIRO_STATUS_SUCCESS) {  // a picture cairo stopped drawing is not written
      throw std::runtime_error(std::string("plot: cairo failed while drawing: ") + cairo_status_to_string(cairo_status(cr_)));
    }
    cairo_surface_flush(surface_);
    const unsigned char* data = cairo_image_surface_get_data(surface_);
    const int stride = cairo_image_surface_get_stride(surface_);
    std::vector<unsigned char> out(static_cast<size_t>(w) * h * 3);
    for (int y = 0; y < h; ++y) {
      const auto* row = reinterpret_cast<const uint32_t*>(data + static_cast<ptrdiff_t>(y) * stride);
      for (int x = 0; x < w; ++x) {
        unsigned char* p = &out[(static_cast<size_t>(y) * w + x) * 3];
        p[0] = static_cast<unsigned char>(row[x] >> 16), p[1] = static_cast<unsigned char>(row[x] >> 8), p[2] = static_cast<unsigned char>(row[x]);
      }
    }
    return out;
  }

 private:
  void release() {
    if (cr_ != nullptr) cairo_destroy(cr_);
    if (surface_ != nullptr) cairo_surface_destroy(surface_);
    cr_ = nullptr, surface_ = nullptr;
  }
  cairo_surface_t* surface_ = nullptr;
  cairo_t* cr_ = nullptr;
};

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

// 10^e as people write it: 0.001 … 10000 in full, 1e-5 and 1e5 beyond.
std::string power_of_ten(int e) {
  char buf[24];
  if (e >= 0 && e <= 4) std::snprintf(buf, sizeof buf, "%.0f", std::pow(10.0, e));
  else if (e < 0 && e >= -3) std::snprintf(buf, sizeof buf, "%.*f", -e, std::pow(10.0, e));
  else std::snprintf(buf, sizeof buf, "1e%d", e);
  return buf;
}

// Maps data coordinates into the plot area (offset by `origin_x` for side-by-side panels, narrowed
// by `right` on the right) and draws frame, grid, ticks, title and legend.
struct Axes {
  Canvas& c;
  double xlo, xhi, ylo, yhi;
  bool log_y = false;
  bool log_x = false;  // xlo, xhi are then log10 of the data range
  int origin_x = 0;
  int width = 0;  // of this panel; 0 = the canvas
  int right = kRight;
  int px0() const { return origin_x + kLeft; }
  int px1() const { return origin_x + (width > 0 ? width : c.w) - right; }
  int py0() const { return kTop; }
  int py1() const { return c.h - kBottom; }
  double X(double x) const { return px0() + (x - xlo) / (xhi - xlo) * (px1() - px0()); }
  double Y(double y) const { return py1() - (y - ylo) / (yhi - ylo) * (py1() - py0()); }
  bool inside(double x, double y) const { return x >= px0() && x <= px1() && y >= py0() && y <= py1(); }

  void x_tick(double v, const std::string& label, bool grid) {
    const double x = X(v);
    if (grid) c.hairline(x, py0(), x, py1(), kGrid);
    c.hairline(x, py1(), x, py1() + 5, kFrame);
    c.text(x, py1() + 8, label, kBlack, kTickFont, 0.5);
  }
  void y_tick(double v, const std::string& label, bool grid) {
    const double y = Y(v);
    if (grid) c.hairline(px0(), y, px1(), y, kGrid);
    c.hairline(px0() - 5, y, px0(), y, kFrame);
    c.text(px0() - 8, y - kTickFont * 0.6, label, kBlack, kTickFont, 1.0);
  }

  // Ticks and labels; `grid` draws light grid lines under the data (off where the data cover the area).
  void frame(const std::string& title, bool grid = true) {
    if (log_x) {  // ticks at 1, 2, 5 × powers of ten
      for (double e = std::floor(xlo); e <= xhi + 1e-9 && e - std::floor(xlo) < kMaxTicks; e += 1) {
        for (double m : {1.0, 2.0, 5.0}) {
          const double v = e + std::log10(m);
          if (v < xlo - 1e-9 || v > xhi + 1e-9) continue;
          char buf[24];
          std::snprintf(buf, sizeof buf, "%g", m * std::pow(10.0, e));
          x_tick(v, std::fabs(e) <= 4 ? std::string(buf) : (m == 1 ? power_of_ten(static_cast<int>(e)) : std::string()), grid);
        }
      }
    } else {
      const double xs = nice_step(xhi - xlo, 6);
      int ticks = 0;
      for (double v = std::ceil(xlo / xs) * xs; v <= xhi + 1e-9 * xs && ticks < kMaxTicks; v += xs, ++ticks) x_tick(v, format_tick(v, xs), grid);
    }
    if (log_y) {
      for (double e = std::ceil(ylo); e <= yhi + 1e-9 && e - std::ceil(ylo) < kMaxTicks; e += 1) {
        y_tick(e, power_of_ten(static_cast<int>(e)), grid);
      }
    } else {
      const double ys = nice_step(yhi - ylo, 6);
      int ticks = 0;
      for (double v = std::ceil(ylo / ys) * ys; v <= yhi + 1e-9 * ys && ticks < kMaxTicks; v += ys, ++ticks) y_tick(v, format_tick(v, ys), grid);
    }
    if (!title.empty()) c.text(px0(), 9, title, kBlack, kTitleFont, 0.0, true);
  }
  // The frame's four sides, drawn last so data do not cover them.
  void border() {
    c.outline(px0(), py0(), px1() - px0(), py1() - py0(), kFrame);
  }
  // Clips drawing to the data area until the returned guard ends.
  struct Clip {
    cairo_t* cr;
    ~Clip() { cairo_restore(cr); }
  };
  Clip clip() {
    cairo_save(c.cr());
    cairo_rectangle(c.cr(), px0(), py0(), px1() - px0(), py1() - py0());
    cairo_clip(c.cr());
    return Clip{c.cr()};
  }

  void legend(const std::vector<std::pair<std::string, Color>>& entries) {
    if (entries.empty()) return;
    double width = 0;
    for (const auto& e : entries) width = std::max(width, c.text_width(e.first, kLegendFont));
    const double x = px1() - width - 36, y0 = py0() + 8;
    const double line = 21;
    c.rect(x - 8, y0 - 6, px1() - 8, y0 + entries.size() * line + 2, {255, 255, 255}, 0.88);
    c.outline(x - 8, y0 - 6, px1() - 8 - (x - 8) - 1, entries.size() * line + 7, {200, 200, 200});
    double y = y0;
    for (const auto& e : entries) {
      c.rect(x, y + 2, x + 12, y + 14, e.second);
      c.text(x + 18, y, e.first, kBlack, kLegendFont);
      y += line;
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

// Viridis at nine evenly spaced stops (matplotlib's table), linear between them.
Color colormap(double s) {
  static const double stops[9][3] = {{68, 1, 84},    {71, 45, 123},  {59, 82, 139},  {44, 114, 142}, {33, 145, 140},
                                     {40, 174, 128}, {94, 201, 98},  {173, 220, 48}, {253, 231, 37}};
  s = std::clamp(std::isfinite(s) ? s : 0.0, 0.0, 1.0) * 8;
  const int k = std::min(7, static_cast<int>(s));
  const double f = s - k;
  Color c;
  for (int i = 0; i < 3; ++i) c[i] = static_cast<unsigned char>(std::lround(stops[k][i] * (1 - f) + stops[k + 1][i] * f));
  return c;
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
  const int64_t cell_w = w * scale, cell_h = h * scale;
  if (static_cast<double>(columns) * (cell_w + 2) * static_cast<double>(rows) * (cell_h + 2) > static_cast<double>(int64_t{1} << 28) ||
      static_cast<double>(columns) * (cell_w + 2) + 400 > kMaxSide || static_cast<double>(rows) * (cell_h + 2) + 30 > kMaxSide) {
    throw std::invalid_argument("write_image_grid_png: a grid of " + std::to_string(rows) + " x " + std::to_string(columns) + " images of " +
                                std::to_string(cell_w) + "x" + std::to_string(cell_h) + " pixels is too large (sides up to 32767 pixels)");
  }
  constexpr int kGap = 2;
  double left = kGap;
  {
    Canvas probe(1, 1);
    for (const auto& label : row_labels) left = std::max(left, std::ceil(probe.text_width(label, kLegendFont)) + 14);
  }
  const int top = title.empty() ? kGap : 30;
  const int width = static_cast<int>(left) + static_cast<int>(columns * (cell_w + kGap)), height = top + static_cast<int>(rows * (cell_h + kGap));
  Canvas canvas(width, height);
  if (!title.empty()) canvas.text(8, 7, title, kBlack, kTitleFont, 0.0, true);
  at::Tensor pixels = images.contiguous();
  const uint8_t* data = pixels.data_ptr<uint8_t>();
  std::vector<unsigned char> rgb(static_cast<size_t>(h * w * 3));
  for (int64_t k = 0; k < n; ++k) {
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t ch = 0; ch < 3; ++ch) rgb[static_cast<size_t>((y * w + x) * 3 + ch)] = data[((k * c + (c == 1 ? 0 : ch)) * h + y) * w + x];
    const double x0 = left + static_cast<double>((k % columns) * (cell_w + kGap)), y0 = top + static_cast<double>((k / columns) * (cell_h + kGap));
    canvas.image(rgb, static_cast<int>(w), static_cast<int>(h), x0, y0, x0 + cell_w, y0 + cell_h);
  }
  for (size_t r = 0; r < row_labels.size(); ++r) {
    canvas.text(6, top + static_cast<double>(r) * (cell_h + kGap) + cell_h / 2.0 - 8, row_labels[r], kBlack, kLegendFont);
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
  {
    auto clip = ax.clip();
    for (const auto& ser : series) {
      at::Tensor p = ser.points.to(at::kCPU, at::kDouble).contiguous();
      const double* d = p.data_ptr<double>();
      for (int64_t i = 0; i < p.size(0); ++i) {
        const double x = ax.X(d[2 * i]), y = ax.Y(d[2 * i + 1]);
        if (std::isfinite(x) && std::isfinite(y) && ax.inside(x, y)) c.dot(x, y, ser.color, ser.alpha);
      }
      if (!ser.label.empty()) legend.emplace_back(ser.label, ser.color);
    }
  }
  ax.border();
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
  {
    auto clip = ax.clip();
    std::vector<double> xy;
    for (int64_t i = 0; i < n; ++i) {
      xy.clear();
      for (int64_t k = 0; k < T; ++k) {
        const double x = ax.X(at_(k, i, 0)), y = ax.Y(at_(k, i, 1));
        if (!std::isfinite(x) || !std::isfinite(y)) break;
        xy.push_back(x), xy.push_back(y);
      }
      c.polyline(xy, path_color, 0.3, 0.8);
    }
    for (int64_t i = 0; i < n; ++i) {
      c.dot(ax.X(at_(0, i, 0)), ax.Y(at_(0, i, 1)), start, 0.8, 2.0);
      c.dot(ax.X(at_(T - 1, i, 0)), ax.Y(at_(T - 1, i, 1)), end, 0.8, 2.0);
    }
  }
  ax.border();
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
  Canvas c(style.width, style.height);
  if (log_x) {
    const double pad = (xh - xl) * 0.03;
    xl -= pad, xh += pad;
  }
  Axes ax{c, xl, xh, yl, yh, log_y, log_x};
  ax.frame(style.title);
  std::vector<std::pair<std::string, Color>> legend;
  {
    auto clip = ax.clip();
    for (const auto& ser : series) {
      std::vector<double> xy;
      auto flush = [&] {
        c.polyline(xy, ser.color, 0.95, 1.8);
        xy.clear();
      };
      for (size_t k = 0; k < ser.x.size(); ++k) {
        if (!usable(ser.x[k], ser.y[k])) {
          flush();
          continue;
        }
        xy.push_back(ax.X(tx(ser.x[k]))), xy.push_back(ax.Y(ty(ser.y[k])));
      }
      flush();
      if (ser.x.size() < 40)
        for (size_t k = 0; k < ser.x.size(); ++k)
          if (usable(ser.x[k], ser.y[k])) c.dot(ax.X(tx(ser.x[k])), ax.Y(ty(ser.y[k])), ser.color, 1.0, 3.0);
      if (!ser.label.empty()) legend.emplace_back(ser.label, ser.color);
    }
  }
  ax.border();
  ax.legend(legend);
  write_canvas(path, c);
}

void write_heatmaps_png(const std::string& path, const std::vector<Heatmap>& panels, const PlotStyle& style) {
  if (panels.empty()) throw std::invalid_argument("write_heatmaps_png: no panels");
  for (const auto& panel : panels) {
    if (!panel.values.defined() || panel.values.dim() != 2 || panel.values.size(0) < 1 || panel.values.size(1) < 1) {
      throw std::invalid_argument("write_heatmaps_png: values must be a non-empty (rows, cols) tensor");
    }
    if (!(panel.x_hi > panel.x_lo) || !(panel.y_hi > panel.y_lo)) {
      throw std::invalid_argument("write_heatmaps_png: the panel's range is empty");
    }
    if (panel.values.size(0) > 16384 || panel.values.size(1) > 16384) {
      throw std::invalid_argument("write_heatmaps_png: at most 16384 rows and columns, got " + c10::str(panel.values.sizes()));
    }
  }
  // Side by side, each panel style.width wide with its own colour bar.
  const int64_t total_width = static_cast<int64_t>(style.width) * static_cast<int64_t>(panels.size());
  if (total_width > kMaxSide) {
    throw std::invalid_argument("write_heatmaps_png: " + std::to_string(panels.size()) + " panels of " + std::to_string(style.width) +
                                " pixels are wider than 32767");
  }
  Canvas c(static_cast<int>(total_width), style.height);
  for (size_t k = 0; k < panels.size(); ++k) {
    const Heatmap& panel = panels[k];
    at::Tensor v = panel.values.to(at::kCPU, at::kDouble).contiguous();
    at::Tensor finite = v.index({at::isfinite(v)});
    double lo = panel.v_lo, hi = panel.v_hi;
    if (!(hi > lo)) {
      lo = finite.numel() ? finite.min().item<double>() : 0.0;
      hi = finite.numel() ? finite.max().item<double>() : 1.0;
      if (!(hi > lo)) hi = lo + 1;
    }
    Axes ax{c, panel.x_lo, panel.x_hi, panel.y_lo, panel.y_hi};
    ax.origin_x = static_cast<int>(k) * style.width;
    ax.width = style.width;
    ax.right = kRight + kBarGap + kBarWidth + kBarLabels;
    // The cells as an image, row 0 (y = y_lo) at the bottom; non-finite cells take the lowest colour.
    const int rows = static_cast<int>(v.size(0)), cols = static_cast<int>(v.size(1));
    const double* data = v.data_ptr<double>();
    std::vector<unsigned char> rgb(static_cast<size_t>(rows) * cols * 3);
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) {
        const Color col = colormap((data[static_cast<size_t>(i) * cols + j] - lo) / (hi - lo));
        std::copy(col.begin(), col.end(), &rgb[(static_cast<size_t>(rows - 1 - i) * cols + j) * 3]);
      }
    c.image(rgb, cols, rows, ax.px0(), ax.py0(), ax.px1(), ax.py1());
    ax.frame(panel.title, false);
    ax.border();
    // The colour bar: 256 levels from lo (bottom) to hi (top), with ticks at nice values.
    const double bx0 = ax.px1() + kBarGap, bx1 = bx0 + kBarWidth;
    std::vector<unsigned char> bar(256 * 3);
    for (int i = 0; i < 256; ++i) {
      const Color col = colormap((255 - i) / 255.0);
      std::copy(col.begin(), col.end(), &bar[static_cast<size_t>(i) * 3]);
    }
    c.image(bar, 1, 256, bx0, ax.py0(), bx1, ax.py1());
    c.outline(bx0, ax.py0(), kBarWidth, ax.py1() - ax.py0(), kFrame);
    const double step = nice_step(hi - lo, 6);
    int ticks = 0;
    for (double t = std::ceil(lo / step) * step; t <= hi + 1e-9 * step && ticks < kMaxTicks; t += step, ++ticks) {
      const double y = ax.py1() - (t - lo) / (hi - lo) * (ax.py1() - ax.py0());
      c.hairline(bx1, y, bx1 + 4, y, kFrame);
      c.text(bx1 + 7, y - kTickFont * 0.6, format_tick(t, step), kBlack, kTickFont);
    }
  }
  write_canvas(path, c);
}

}  // namespace flowmatch::io
