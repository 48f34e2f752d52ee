// SPDX-License-Identifier: Apache-2.0
// PIL's 8-bit Image.resize (libImaging/Resample.c): separable convolution whose support widens
// with the downscale factor, coefficients normalised per output pixel and applied in 22-bit
// fixed point, horizontal pass then vertical pass, each rounded to uint8. NEAREST is PIL's
// affine nearest-neighbour mapping. Written from the algorithm's description, not PIL's code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/io/image8.hpp"

namespace vitmae::detail {

/// PIL's resampling filters by their enum values (Image.Resampling).
enum class Resample { nearest = 0, lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5 };

inline double pil_filter(Resample r, double x) {
  switch (r) {
    case Resample::box:
      return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
    case Resample::bilinear:
      x = std::fabs(x);
      return x < 1.0 ? 1.0 - x : 0.0;
    case Resample::hamming:
      x = std::fabs(x);
      if (x == 0.0) return 1.0;
      if (x >= 1.0) return 0.0;
      return std::sin(x * M_PI) / (x * M_PI) * (0.54 + 0.46 * std::cos(x * M_PI));
    case Resample::bicubic: {  // a = -0.5 in PIL (torch uses -0.75)
      const double a = -0.5;
      x = std::fabs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
      if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
      return 0.0;
    }
    case Resample::lanczos: {
      auto sinc = [](double v) { return v == 0.0 ? 1.0 : std::sin(v * M_PI) / (v * M_PI); };
      return (x > -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0;
    }
    case Resample::nearest:
      break;
  }
  return 0.0;
}

inline double pil_support(Resample r) {
  switch (r) {
    case Resample::box:
      return 0.5;
    case Resample::bilinear:
    case Resample::hamming:
      return 1.0;
    case Resample::bicubic:
      return 2.0;
    case Resample::lanczos:
      return 3.0;
    case Resample::nearest:
      break;
  }
  return 0.0;
}

struct PilCoeffs {
  int ksize = 0;
  std::vector<int> xmin, xcount;  // per output pixel: first input index and tap count
  std::vector<std::int32_t> k;    // out_size * ksize fixed-point weights
};

constexpr int kPrecisionBits = 32 - 8 - 2;

/// precompute_coeffs + normalize_coeffs_8bpc for one axis (box [0, in_size)).
inline PilCoeffs pil_coeffs(int in_size, int out_size, Resample r) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = pil_support(r) * filterscale;
  PilCoeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.xmin.resize(static_cast<size_t>(out_size));
  c.xcount.resize(static_cast<size_t>(out_size));
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(static_cast<size_t>(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);  // C truncation, then clamp
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[static_cast<size_t>(x)] = pil_filter(r, (x + xmin - center + 0.5) * ss);
      ww += w[static_cast<size_t>(x)];
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[static_cast<size_t>(x)] / ww : w[static_cast<size_t>(x)];
      c.k[static_cast<size_t>(xx) * c.ksize + x] =
          static_cast<std::int32_t>(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.xmin[static_cast<size_t>(xx)] = xmin;
    c.xcount[static_cast<size_t>(xx)] = xmax;
  }
  return c;
}

inline std::uint8_t pil_clip8(std::int64_t v) {
  if (v >= (std::int64_t(1) << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<std::uint8_t>(v >> kPrecisionBits);
}

/// PIL's Image.resize((out_w, out_h), resample) of an 8-bit image (any channel count).
inline io::Image8 pil_resize(const io::Image8& in, int out_w, int out_h, Resample r) {
  detail::require(out_w > 0 && out_h > 0, "resize: target size ", out_w, "x", out_h, " must be positive");
  detail::require(in.width > 0 && in.height > 0, "resize: empty input image");
  const int C = in.channels;
  if (r == Resample::nearest) {
    io::Image8 out{out_w, out_h, C, std::vector<std::uint8_t>(static_cast<size_t>(out_w) * out_h * C)};
    const double ax = static_cast<double>(in.width) / out_w, ay = static_cast<double>(in.height) / out_h;
    std::vector<int> xin(static_cast<size_t>(out_w));
    double xo = ax * 0.5;  // PIL steps the source coordinate by repeated addition
    for (int x = 0; x < out_w; ++x, xo += ax)
      xin[static_cast<size_t>(x)] = std::min(static_cast<int>(xo), in.width - 1);
    double yo = ay * 0.5;
    for (int y = 0; y < out_h; ++y, yo += ay) {
      const int yi = std::min(static_cast<int>(yo), in.height - 1);
      for (int x = 0; x < out_w; ++x)
        for (int c = 0; c < C; ++c) out.at(y, x, c) = in.at(yi, xin[static_cast<size_t>(x)], c);
    }
    return out;
  }
  const bool need_h = out_w != in.width, need_v = out_h != in.height;
  const PilCoeffs ch = pil_coeffs(in.width, out_w, r);
  PilCoeffs cv = pil_coeffs(in.height, out_h, r);
  io::Image8 cur = in;
  if (need_h) {
    // Only the rows the vertical pass reads: [first, last).
    const int first = cv.xmin.front(), last = cv.xmin.back() + cv.xcount.back();
    for (auto& m : cv.xmin) m -= first;
    io::Image8 tmp{out_w, last - first, C, std::vector<std::uint8_t>(static_cast<size_t>(out_w) * (last - first) * C)};
    for (int y = 0; y < tmp.height; ++y)
      for (int xx = 0; xx < out_w; ++xx) {
        const std::int32_t* k = &ch.k[static_cast<size_t>(xx) * ch.ksize];
        for (int c = 0; c < C; ++c) {
          std::int64_t ss = std::int64_t(1) << (kPrecisionBits - 1);
          for (int x = 0; x < ch.xcount[static_cast<size_t>(xx)]; ++x)
            ss += static_cast<std::int64_t>(in.at(y + first, x + ch.xmin[static_cast<size_t>(xx)], c)) * k[x];
          tmp.at(y, xx, c) = pil_clip8(ss);
        }
      }
    cur = std::move(tmp);
  }
  if (need_v) {
    io::Image8 out{cur.width, out_h, C, std::vector<std::uint8_t>(static_cast<size_t>(cur.width) * out_h * C)};
    for (int yy = 0; yy < out_h; ++yy) {
      const std::int32_t* k = &cv.k[static_cast<size_t>(yy) * cv.ksize];
      for (int x = 0; x < cur.width; ++x)
        for (int c = 0; c < C; ++c) {
          std::int64_t ss = std::int64_t(1) << (kPrecisionBits - 1);
          for (int y = 0; y < cv.xcount[static_cast<size_t>(yy)]; ++y)
            ss += static_cast<std::int64_t>(cur.at(y + cv.xmin[static_cast<size_t>(yy)], x, c)) * k[y];
          out.at(yy, x, c) = pil_clip8(ss);
        }
    }
    cur = std::move(out);
  }
  return cur;
}

}  // namespace vitmae::detail
