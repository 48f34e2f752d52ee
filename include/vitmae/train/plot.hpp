// SPDX-License-Identifier: Apache-2.0
// The training loss curve as a standalone SVG file.
#pragma once

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "vitmae/train/trainer.hpp"

namespace vitmae::train {

/// The loss curve as a standalone SVG: loss against step and its moving average over `window`
/// steps (default: a 50th of the run, at least 2), with the axes' ranges labelled; each line has
/// at most about 2 * max_points points.
inline std::string loss_curve_svg(const std::vector<StepRecord>& h, int window = 0, size_t max_points = 600) {
  const double W = 720, H = 400, ml = 70, mr = 20, mt = 30, mb = 50;
  std::ostringstream s;
  s.precision(6);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W << ' ' << H
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
  const double s0 = static_cast<double>(h.front().step), s1 = static_cast<double>(std::max(h.back().step, h.front().step + 1));
  auto X = [&](double st) { return ml + (st - s0) / (s1 - s0) * (W - ml - mr); };
  auto Y = [&](double v) { return mt + (hi - v) / (hi - lo) * (H - mt - mb); };
  s << "<line x1=\"" << ml << "\" y1=\"" << H - mb << "\" x2=\"" << W - mr << "\" y2=\"" << H - mb << "\" stroke=\"black\"/>\n";
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
  s << "<text x=\"" << W - mr << "\" y=\"" << H - mb + 18 << "\" text-anchor=\"middle\">" << h.back().step << "</text>\n";
  s << "<text x=\"" << (ml + W - mr) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">step</text>\n";
  s << "<text x=\"" << (ml + W - mr) / 2 << "\" y=\"18\" text-anchor=\"middle\">training loss (light: per step; dark: moving average of "
    << window << ")</text>\n</svg>\n";
  return s.str();
}

}  // namespace vitmae::train
