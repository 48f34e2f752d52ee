// SPDX-License-Identifier: Apache-2.0
// The safetensors format (huggingface/safetensors): 8-byte little-endian header length N, an
// N-byte JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the
// data. Reader (memory-mapped, validated) and writer, written for vitmae.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vitmae/error.hpp"
#include "vitmae/io/dtype.hpp"
#include "vitmae/io/file.hpp"
#include "vitmae/io/mapped_file.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae::io {

struct TensorInfo {
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // byte offsets into the data section
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

/// A parsed, validated safetensors file. Tensors are read (and converted) on demand.
class SafetensorsFile {
 public:
  /// Largest header accepted (the reference library's own limit is 100 MB).
  static constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

  explicit SafetensorsFile(const std::string& path) : file_(std::make_shared<RandomAccessFile>(path)) { parse(); }

  const std::string& path() const { return file_->path(); }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }

  const TensorInfo& info(const std::string& name) const {
    auto it = tensors_.find(name);
    detail::require(it != tensors_.end(), path(), ": no tensor '", name, "'");
    return it->second;
  }

  /// Converts a tensor's elements into dst (numel elements), in chunks: F32 into float (and
  /// F64 into double) is read in place.
  template <class Scalar>
  void read(const std::string& name, Scalar* dst) const {
    const TensorInfo& t = info(name);
    const std::uint64_t n = static_cast<std::uint64_t>(t.numel()), es = dtype_size(t.dtype);
    const std::uint64_t at = data_start_ + t.begin;
    if ((std::is_same_v<Scalar, float> && t.dtype == DType::F32) ||
        (std::is_same_v<Scalar, double> && t.dtype == DType::F64)) {
      file_->read(at, dst, n * es);
      return;
    }
    constexpr std::uint64_t kChunk = 1u << 16;  // elements
    std::vector<unsigned char> buf(static_cast<size_t>(std::min(n, kChunk) * es));
    for (std::uint64_t i = 0; i < n; i += kChunk) {
      const std::uint64_t m = std::min(kChunk, n - i);
      file_->read(at + i * es, buf.data(), m * es);
      convert_elements(t.dtype, buf.data(), static_cast<std::size_t>(m), dst + i);
    }
  }

  template <class Scalar>
  Tensor<Scalar> get(const std::string& name) const {
    const TensorInfo& t = info(name);
    Tensor<Scalar> out(std::vector<Index>(t.shape.begin(), t.shape.end()));
    read(name, out.ptr());
    return out;
  }

 private:
  void parse() {
    const std::string& p = path();
    const std::size_t size = file_->size();
    detail::require(size >= 8, p, ": not a safetensors file: ", size,
                    " bytes, expected at least 8 (the header length)");
    std::uint64_t n = 0;
    file_->read(0, &n, 8);
    detail::require(n <= kMaxHeaderBytes, p, ": safetensors header length ", n, " is larger than the limit of ",
                    kMaxHeaderBytes, " bytes");
    detail::require(n <= size - 8, p, ": safetensors header length ", n, " is larger than the file (", size,
                    " bytes): file truncated or not safetensors");
    data_start_ = 8 + n;
    const std::uint64_t data_size = size - data_start_;
    std::string text(static_cast<size_t>(n), '\0');
    file_->read(8, text.data(), n);
    nlohmann::json header;
    // nlohmann keeps the last of duplicate keys; the callback sees every top-level key.
    std::vector<std::string> keys;
    std::string duplicate;
    const nlohmann::json::parser_callback_t watch = [&](int depth, nlohmann::json::parse_event_t event,
                                                        nlohmann::json& parsed) {
      if (depth == 1 && event == nlohmann::json::parse_event_t::key && parsed.is_string()) {
        const std::string k = parsed.get<std::string>();
        if (duplicate.empty() && std::find(keys.begin(), keys.end(), k) != keys.end()) duplicate = k;
        keys.push_back(k);
      }
      return true;
    };
    try {
      header = nlohmann::json::parse(text.begin(), text.end(), watch);
    } catch (const nlohmann::json::exception& e) {
      detail::fail(p, ": safetensors header is not valid JSON (", e.what(), ")");
    }
    detail::require(duplicate.empty(), p, ": duplicate tensor name '", duplicate, "' in the header");
    detail::require(header.is_object(), p, ": safetensors header must be a JSON object, got ", header.type_name());
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    std::vector<std::string> range_names;
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const nlohmann::json& v = it.value();
      if (name == "__metadata__") {
        detail::require(v.is_object(), p, ": __metadata__ must be an object of strings");
        for (auto m = v.begin(); m != v.end(); ++m) {
          detail::require(m.value().is_string(), p, ": __metadata__ '", m.key(), "' must be a string");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      const std::string where = p + ": tensor '" + name + "'";
      detail::require(v.is_object(), where, ": entry must be an object");
      auto dt = v.find("dtype");
      auto sh = v.find("shape");
      auto off = v.find("data_offsets");
      detail::require(dt != v.end() && dt->is_string(), where, ": missing or non-string 'dtype'");
      detail::require(sh != v.end() && sh->is_array(), where, ": missing or non-array 'shape'");
      detail::require(off != v.end() && off->is_array() && off->size() == 2, where,
                      ": 'data_offsets' must be an array [begin, end]");
      TensorInfo t;
      detail::require(dtype_from_name(dt->get<std::string>(), t.dtype), where, ": unknown dtype '",
                      dt->get<std::string>(), "', expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL");
      // Element count, checked for overflow against the file size.
      std::uint64_t numel = 1;
      for (const auto& d : *sh) {
        detail::require(d.is_number_integer() && d.get<std::int64_t>() >= 0, where, ": shape ", sh->dump(),
                        " must hold non-negative integers");
        const auto dim = static_cast<std::uint64_t>(d.get<std::int64_t>());
        detail::require(dim == 0 || numel <= std::numeric_limits<std::uint64_t>::max() / dim / 8, where, ": shape ",
                        sh->dump(), " has an element count that overflows");
        numel *= dim;
        t.shape.push_back(static_cast<std::int64_t>(dim));
      }
      for (const auto& o : *off)
        detail::require(o.is_number_unsigned() || (o.is_number_integer() && o.get<std::int64_t>() >= 0), where,
                        ": data_offsets ", off->dump(), " must be non-negative integers");
      t.begin = (*off)[0].get<std::uint64_t>();
      t.end = (*off)[1].get<std::uint64_t>();
      detail::require(t.begin <= t.end, where, ": data_offsets ", off->dump(), " are reversed");
      detail::require(t.end <= data_size, where, ": data_offsets ", off->dump(), " run past the data section (",
                      data_size, " bytes): file truncated?");
      detail::require(t.end - t.begin == numel * dtype_size(t.dtype), where, ": data_offsets span ", t.end - t.begin,
                      " bytes, expected shape ", sh->dump(), " x ", dtype_name(t.dtype), " = ",
                      numel * dtype_size(t.dtype));
      ranges.emplace_back(t.begin, t.end);
      range_names.push_back(name);
      detail::require(tensors_.emplace(name, std::move(t)).second, p, ": duplicate tensor name '", name, "'");
    }
    // Tensors must not overlap (the reference also requires them to tile the data exactly).
    std::vector<size_t> order(ranges.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
    for (size_t i = 1; i < order.size(); ++i) {
      const auto& prev = ranges[order[i - 1]];
      const auto& cur = ranges[order[i]];
      detail::require(cur.first >= prev.second || cur.first == cur.second || prev.first == prev.second, p,
                      ": tensors '", range_names[order[i - 1]], "' and '", range_names[order[i]],
                      "' overlap in the data section");
    }
  }

  std::shared_ptr<RandomAccessFile> file_;
  std::uint64_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// Collects tensors and writes one safetensors file atomically.
class SafetensorsWriter {
 public:
  /// Adds a tensor from `count` Scalars at src, stored as `dtype` (F64, F32, F16, BF16 or I64).
  template <class Scalar>
  void add(const std::string& name, const Scalar* src, const std::vector<std::int64_t>& shape, DType dtype) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    std::string bytes(static_cast<size_t>(n) * dtype_size(dtype), '\0');
    auto* out = reinterpret_cast<unsigned char*>(bytes.data());
    for (std::int64_t i = 0; i < n; ++i) {
      const Scalar v = src[i];
      switch (dtype) {
        case DType::F64: {
          const double x = static_cast<double>(v);
          std::memcpy(out + 8 * i, &x, 8);
          break;
        }
        case DType::F32: {
          const float x = static_cast<float>(v);
          std::memcpy(out + 4 * i, &x, 4);
          break;
        }
        case DType::F16: {
          const std::uint16_t x = detail::float_to_f16(static_cast<float>(v));
          std::memcpy(out + 2 * i, &x, 2);
          break;
        }
        case DType::BF16: {
          const std::uint16_t x = detail::float_to_bf16(static_cast<float>(v));
          std::memcpy(out + 2 * i, &x, 2);
          break;
        }
        case DType::I64: {
          const std::int64_t x = static_cast<std::int64_t>(v);
          std::memcpy(out + 8 * i, &x, 8);
          break;
        }
        default:
          detail::fail("SafetensorsWriter: cannot write '", name, "' as ", dtype_name(dtype));
      }
    }
    add_raw(name, dtype, shape, std::move(bytes));
  }

  void add_raw(const std::string& name, DType dtype, const std::vector<std::int64_t>& shape, std::string bytes) {
    detail::require(name != "__metadata__", "SafetensorsWriter: '__metadata__' is not a tensor name");
    for (const auto& e : entries_)
      detail::require(e.name != name, "SafetensorsWriter: duplicate tensor name '", name, "'");
    entries_.push_back({name, dtype, shape, std::move(bytes)});
  }

  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  /// The tensors added so far, in order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.name);
    return out;
  }

  /// Writes the file: header padded with spaces to a multiple of 8, tensors in the order added.
  void save(const std::string& path) const {
    nlohmann::json header = nlohmann::json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const auto& e : entries_) {
      header[e.name] = {
          {"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.bytes.size()}}};
      offset += e.bytes.size();
    }
    std::string h = header.dump();
    while (h.size() % 8 != 0) h.push_back(' ');
    write_file_atomic(path, [&](std::FILE* f) {
      const std::uint64_t n = h.size();
      std::fwrite(&n, 8, 1, f);
      std::fwrite(h.data(), 1, h.size(), f);
      for (const auto& e : entries_)
        if (!e.bytes.empty()) std::fwrite(e.bytes.data(), 1, e.bytes.size(), f);
    });
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;
    std::string bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace vitmae::io
