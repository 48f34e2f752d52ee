// SPDX-License-Identifier: Apache-2.0
// vitmae::Error, the one exception type the library throws, and detail::require().
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace vitmae {

/// Every error the library reports: "vitmae: <where>: <what>, expected <x>, got <y>".
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// An Error in what the caller asked for rather than in the data: a resumed run whose options
/// differ from its checkpoint's. The programs report it as a usage error (exit 2).
class RequestError : public Error {
 public:
  explicit RequestError(const std::string& what) : Error(what) {}
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream s;
  (s << ... << std::forward<Parts>(parts));
  return s.str();
}

/// Throws vitmae::Error("vitmae: " + parts...) when ok is false; builds the string only then.
template <class... Parts>
inline void require(bool ok, Parts&&... parts) {
  if (!ok) throw Error(concat("vitmae: ", std::forward<Parts>(parts)...));
}

template <class... Parts>
[[noreturn]] inline void fail(Parts&&... parts) {
  throw Error(concat("vitmae: ", std::forward<Parts>(parts)...));
}

/// "[2, 3, 4]"
template <class Int>
std::string shape_str(const std::vector<Int>& shape) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

}  // namespace detail
}  // namespace vitmae
