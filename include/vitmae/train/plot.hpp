// SPDX-License-Identifier: Apache-2.0
// Training curves and a confusion matrix as standalone SVG files.
#pragma once

#include <algorithm>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "vitmae/train/loop.hpp"

namespace vitmae::train {

/// The loss curve as a standalone SVG: loss against step and its moving average over `window`
/// steps (default: a 50th of the run, at least 2), with the axes' ranges labelled; each line has
/// at most about 2 * max_points points.
inline std::string loss_curve_svg(const std::vector<StepRecord>& h, int window = 0, size_t max_points = 600) {
  const double W = 720, H = 400, ml = 70, mr = 20, mt = 30, mb = 50;
  std::ostringstream s;
  s.precision(6);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
    << ' ' << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  if (h.empty()) {
    s << "<text x=\"" << W / 2 << "\" y=\"" << H / 2 << "\" text-anchor=\"middle\">no steps yet</text>\n</svg>\n";
    return s.str();
  }
  if (window <= 0) window = static_cast<int>(std::max<size_t>(2, h.size() / 50));
  std::vector<double> avg(h.size());
  double acc = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    acc += h[i].loss;
    if (i >= static_cast<size_t>(window)) acc -= h[i - static_cast<size_t>(window)].loss;
    avg[i] = acc / static_cast<double>(std::min(i + 1, static_cast<size_t>(window)));
  }
  double lo = h[0].loss, hi = h[0].loss;
  for (const auto& r : h) lo = std::min(lo, r.loss), hi = std::max(hi, r.loss);
  if (hi <= lo) hi = lo + 1;
  const double s0 = static_cast<double>(h.front().step),
               s1 = static_cast<double>(std::max(h.back().step, h.front().step + 1));
  auto X = [&](double st) { return ml + (st - s0) / (s1 - s0) * (W - ml - mr); };
  auto Y = [&](double v) { return mt + (hi - v) / (hi - lo) * (H - mt - mb); };
  s << "<line x1=\"" << ml << "\" y1=\"" << H - mb << "\" x2=\"" << W - mr << "\" y2=\"" << H - mb
    << "\" stroke=\"black\"/>\n";
  s << "<line x1=\"" << ml << "\" y1=\"" << mt << "\" x2=\"" << ml << "\" y2=\"" << H - mb << "\" stroke=\"black\"/>\n";
  // At most ~max_points points a line: a long run keeps its shape (each kept point is the
  // extreme of its stride for the raw line) and the file stays small.
  const size_t stride = std::max<size_t>(1, (h.size() + max_points - 1) / max_points);
  auto poly = [&](auto value, const char* colour, double width, bool extremes) {
    s << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"" << width << "\" points=\"";
    for (size_t i = 0; i < h.size(); i += stride) {
      const size_t end = std::min(h.size(), i + stride);
      size_t lo_i = i, hi_i = i;
      for (size_t k = i; k < end && extremes; ++k) {
        if (value(k) < value(lo_i)) lo_i = k;
        if (value(k) > value(hi_i)) hi_i = k;
      }
      for (size_t k : {std::min(lo_i, hi_i), std::max(lo_i, hi_i)}) {
        s << X(static_cast<double>(h[k].step)) << ',' << Y(value(k)) << ' ';
        if (lo_i == hi_i) break;
      }
    }
    s << "\"/>\n";
  };
  poly([&](size_t i) { return h[i].loss; }, "#9ecae1", 1, stride > 1);
  poly([&](size_t i) { return avg[i]; }, "#08519c", 2, false);
  s << "<text x=\"" << ml - 6 << "\" y=\"" << mt + 4 << "\" text-anchor=\"end\">" << hi << "</text>\n";
  s << "<text x=\"" << ml - 6 << "\" y=\"" << H - mb << "\" text-anchor=\"end\">" << lo << "</text>\n";
  s << "<text x=\"" << ml << "\" y=\"" << H - mb + 18 << "\" text-anchor=\"middle\">" << h.front().step << "</text>\n";
  s << "<text x=\"" << W - mr << "\" y=\"" << H - mb + 18 << "\" text-anchor=\"middle\">" << h.back().step
    << "</text>\n";
  s << "<text x=\"" << (ml + W - mr) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">step</text>\n";
  s << "<text x=\"" << (ml + W - mr) / 2
    << "\" y=\"18\" text-anchor=\"middle\">training loss (light: per step; dark: moving average of " << window
    << ")</text>\n</svg>\n";
  return s.str();
}

/// `text` with the characters XML gives a meaning to escaped, for an SVG text element.
inline std::string svg_escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    if (ch == '<') out += "&lt;";
    else if (ch == '>') out += "&gt;";
    else if (ch == '&') out += "&amp;";
    else if (ch == '"') out += "&quot;";
    else out += ch;
  }
  return out;
}

/// One line of a chart: (x, y) points, a name for the legend, an SVG colour.
struct Series {
  std::string name, colour;
  std::vector<std::pair<double, double>> points;
};

/// Lines against a shared x axis as a standalone SVG (validation accuracy against step, say),
/// the y range [y_lo, y_hi] (both 0: the data's), a legend in the top-left corner.
inline std::string line_chart_svg(const std::vector<Series>& series, const std::string& title,
                                  const std::string& x_label, double y_lo = 0, double y_hi = 0) {
  const double W = 720, H = 400, ml = 70, mr = 20, mt = 30, mb = 50;
  std::ostringstream s;
  s.precision(6);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
    << ' ' << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  double x0 = 0, x1 = 0, lo = 0, hi = 0;
  bool any = false;
  for (const auto& se : series)
    for (const auto& [x, y] : se.points) {
      if (!any) x0 = x1 = x, lo = hi = y, any = true;
      x0 = std::min(x0, x), x1 = std::max(x1, x), lo = std::min(lo, y), hi = std::max(hi, y);
    }
  if (!any) {
    s << "<text x=\"" << W / 2 << "\" y=\"" << H / 2 << "\" text-anchor=\"middle\">no points yet</text>\n</svg>\n";
    return s.str();
  }
  if (y_lo != 0 || y_hi != 0) lo = y_lo, hi = y_hi;
  if (hi <= lo) hi = lo + 1;
  if (x1 <= x0) x1 = x0 + 1;
  auto X = [&](double v) { return ml + (v - x0) / (x1 - x0) * (W - ml - mr); };
  auto Y = [&](double v) { return mt + (hi - std::min(hi, std::max(lo, v))) / (hi - lo) * (H - mt - mb); };
  s << "<line x1=\"" << ml << "\" y1=\"" << H - mb << "\" x2=\"" << W - mr << "\" y2=\"" << H - mb
    << "\" stroke=\"black\"/>\n";
  s << "<line x1=\"" << ml << "\" y1=\"" << mt << "\" x2=\"" << ml << "\" y2=\"" << H - mb << "\" stroke=\"black\"/>\n";
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& se = series[k];
    s << "<polyline fill=\"none\" stroke=\"" << se.colour << "\" stroke-width=\"2\" points=\"";
    for (const auto& [x, y] : se.points) s << X(x) << ',' << Y(y) << ' ';
    s << "\"/>\n";
    const double ly = mt + 16 + 16 * static_cast<double>(k);
    s << "<line x1=\"" << ml + 12 << "\" y1=\"" << ly - 4 << "\" x2=\"" << ml + 32 << "\" y2=\"" << ly - 4
      << "\" stroke=\"" << se.colour << "\" stroke-width=\"2\"/>\n<text x=\"" << ml + 38 << "\" y=\"" << ly << "\">"
      << svg_escape(se.name) << "</text>\n";
  }
  s << "<text x=\"" << ml - 6 << "\" y=\"" << mt + 4 << "\" text-anchor=\"end\">" << hi << "</text>\n";
  s << "<text x=\"" << ml - 6 << "\" y=\"" << H - mb << "\" text-anchor=\"end\">" << lo << "</text>\n";
  s << "<text x=\"" << ml << "\" y=\"" << H - mb + 18 << "\" text-anchor=\"middle\">" << x0 << "</text>\n";
  s << "<text x=\"" << W - mr << "\" y=\"" << H - mb + 18 << "\" text-anchor=\"middle\">" << x1 << "</text>\n";
  s << "<text x=\"" << (ml + W - mr) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">" << svg_escape(x_label)
    << "</text>\n";
  s << "<text x=\"" << (ml + W - mr) / 2 << "\" y=\"18\" text-anchor=\"middle\">" << svg_escape(title)
    << "</text>\n</svg>\n";
  return s.str();
}

/// A confusion matrix [true][predicted] as a standalone SVG: one cell per pair, shaded by the
/// fraction of the true class's samples, with its count; rows and columns named by `classes`.
inline std::string confusion_svg(const std::vector<std::vector<long>>& confusion,
                                 const std::vector<std::string>& classes) {
  const size_t n = confusion.size();
  const double cell = 44, ml = 120, mt = 110;
  const double W = ml + cell * static_cast<double>(n) + 20, H = mt + cell * static_cast<double>(n) + 40;
  std::ostringstream s;
  s.precision(4);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
    << ' ' << H
    << "\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  auto name = [&](size_t i) { return svg_escape(i < classes.size() ? classes[i] : std::to_string(i)); };
  for (size_t r = 0; r < n; ++r) {
    long total = 0;
    for (long v : confusion[r]) total += v;
    const double y = mt + cell * static_cast<double>(r);
    s << "<text x=\"" << ml - 6 << "\" y=\"" << y + cell / 2 + 4 << "\" text-anchor=\"end\">" << name(r) << "</text>\n";
    for (size_t c = 0; c < n && c < confusion[r].size(); ++c) {
      const double f = total ? static_cast<double>(confusion[r][c]) / static_cast<double>(total) : 0.0;
      const int shade = static_cast<int>(255 - 200 * f);
      const double x = ml + cell * static_cast<double>(c);
      s << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cell << "\" height=\"" << cell << "\" fill=\"rgb("
        << shade << ',' << shade << ",255)\" stroke=\"#ccc\"/>\n<text x=\"" << x + cell / 2 << "\" y=\""
        << y + cell / 2 + 4 << "\" text-anchor=\"middle\" fill=\"" << (f > 0.6 ? "white" : "black") << "\">"
        << confusion[r][c] << "</text>\n";
    }
  }
  for (size_t c = 0; c < n; ++c) {
    const double x = ml + cell * (static_cast<double>(c) + 0.5);
    s << "<text transform=\"translate(" << x + 4 << ',' << mt - 6 << ") rotate(-60)\">" << name(c) << "</text>\n";
  }
  s << "<text x=\"" << ml - 6 << "\" y=\"" << mt - 6 << "\" text-anchor=\"end\">true \\ predicted</text>\n</svg>\n";
  return s.str();
}

}  // namespace vitmae::train
