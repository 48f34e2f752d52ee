// SPDX-License-Identifier: Apache-2.0
// A pickle reader for PyTorch state dicts: an interpreter of the opcodes torch.save uses
// (protocols 2 to 5) that builds values and never executes anything. The only callables it
// knows are collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter and
// the torch.*Storage types; any other global or opcode is an error naming it.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/io/dtype.hpp"

namespace vitmae::io::pickle {

struct Value;
using Ptr = std::shared_ptr<Value>;

/// A storage named by a persistent id: ('storage', torch.FloatStorage, key, location, numel).
struct StorageRef {
  DType dtype = DType::F32;
  std::string key;
  std::int64_t numel = 0;
};

/// A tensor view of a storage, as _rebuild_tensor_v2 describes it.
struct TensorRef {
  StorageRef storage;
  std::int64_t offset = 0;
  std::vector<std::int64_t> size, stride;
};

struct Value {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor } kind = Kind::None;
  bool b = false;
  std::int64_t i = 0;
  double f = 0;
  std::string s, s2;                      // Str/Bytes; Global: module (s) and name (s2)
  std::vector<Ptr> items;                 // Tuple, List
  std::vector<std::pair<Ptr, Ptr>> dict;  // Dict, in insertion order
  StorageRef storage;
  TensorRef tensor;

  static Ptr make(Kind k) {
    auto v = std::make_shared<Value>();
    v->kind = k;
    return v;
  }
  const char* kind_name() const {
    static const char* names[] = {"None",  "bool", "int",  "float",  "str",     "bytes",
                                  "tuple", "list", "dict", "global", "storage", "tensor"};
    return names[static_cast<int>(kind)];
  }
};

/// The storage dtypes torch.save names.
inline bool storage_dtype(const std::string& name, DType& out) {
  static const std::pair<const char*, DType> table[] = {{"FloatStorage", DType::F32},     {"HalfStorage", DType::F16},
                                                        {"BFloat16Storage", DType::BF16}, {"DoubleStorage", DType::F64},
                                                        {"LongStorage", DType::I64},      {"IntStorage", DType::I32},
                                                        {"ShortStorage", DType::I16},     {"CharStorage", DType::I8},
                                                        {"ByteStorage", DType::U8},       {"BoolStorage", DType::BOOL}};
  for (const auto& [n, d] : table)
    if (name == n) {
      out = d;
      return true;
    }
  return false;
}

class Unpickler {
 public:
  /// Limits that keep a hostile file from exhausting memory.
  static constexpr std::size_t kMaxStack = 1u << 20;
  static constexpr std::size_t kMaxMemo = 1u << 22;

  Unpickler(const unsigned char* data, std::size_t size, std::string where)
      : p_(data), end_(data + size), where_(std::move(where)) {}

  Ptr load() {
    while (true) {
      const unsigned char op = u8();
      switch (op) {
        case 0x80:
          u8();
          break;  // PROTO
        case 0x95:
          take(8);
          break;     // FRAME: framing is only a hint
        case '.': {  // STOP
          detail::require(stack_.size() == 1, where_, ": pickle ends with ", stack_.size(),
                          " values on the stack, expected 1");
          return stack_.back();
        }
        case '(':
          marks_.push_back(stack_.size());
          break;  // MARK
        case '}':
          push(Value::make(Value::Kind::Dict));
          break;
        case ']':
          push(Value::make(Value::Kind::List));
          break;
        case ')':
          push(Value::make(Value::Kind::Tuple));
          break;
        case 't': {
          auto t = Value::make(Value::Kind::Tuple);
          t->items = pop_mark();
          push(t);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          const std::size_t n = op - 0x84u;
          need(n);
          auto t = Value::make(Value::Kind::Tuple);
          t->items.assign(stack_.end() - static_cast<long>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          push(t);
          break;
        }
        case 'l': {
          auto l = Value::make(Value::Kind::List);
          l->items = pop_mark();
          push(l);
          break;
        }
        case 'd': {
          auto d = Value::make(Value::Kind::Dict);
          set_items(*d, pop_mark());
          push(d);
          break;
        }
        case 'a': {
          auto v = pop();
          expect(top(), Value::Kind::List, "APPEND").items.push_back(v);
          break;
        }
        case 'e': {
          auto vs = pop_mark();
          auto& l = expect(top(), Value::Kind::List, "APPENDS");
          l.items.insert(l.items.end(), vs.begin(), vs.end());
          break;
        }
        case 's': {
          auto v = pop();
          auto k = pop();
          expect(top(), Value::Kind::Dict, "SETITEM").dict.emplace_back(k, v);
          break;
        }
        case 'u': {
          auto kv = pop_mark();
          set_items(expect(top(), Value::Kind::Dict, "SETITEMS"), kv);
          break;
        }
        case 'q':
          memo_put(u8());
          break;  // BINPUT
        case 'r':
          memo_put(le<std::uint32_t>());
          break;  // LONG_BINPUT
        case 0x94:
          memo_put(memo_.size());
          break;  // MEMOIZE
        case 'h':
          push(memo_get(u8()));
          break;  // BINGET
        case 'j':
          push(memo_get(le<std::uint32_t>()));
          break;     // LONG_BINGET
        case 'c': {  // GLOBAL "module\nname\n"
          const std::string module = line(), name = line();
          push(global(module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop(), module = pop();
          detail::require(module->kind == Value::Kind::Str && name->kind == Value::Kind::Str, where_,
                          ": STACK_GLOBAL expects two strings");
          push(global(module->s, name->s));
          break;
        }
        case 'Q':
          push(persistent_load(pop()));
          break;  // BINPERSID
        case 'R': {
          auto args = pop();
          auto fn = pop();
          push(reduce(*fn, *args));
          break;
        }
        case 'b':
          pop();
          need(1);
          break;  // BUILD: state of OrderedDict/_metadata, not needed
        case 'J':
          push_int(le<std::int32_t>());
          break;
        case 'K':
          push_int(u8());
          break;
        case 'M':
          push_int(le<std::uint16_t>());
          break;
        case 0x8a:
          push_int(long_bytes(u8()));
          break;  // LONG1
        case 0x8b:
          push_int(long_bytes(le<std::uint32_t>()));
          break;  // LONG4
        case 'N':
          push(Value::make(Value::Kind::None));
          break;
        case 0x88:
        case 0x89: {
          auto v = Value::make(Value::Kind::Bool);
          v->b = op == 0x88;
          push(v);
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          const unsigned char* b = take(8);
          std::uint64_t u = 0;
          for (int k = 0; k < 8; ++k) u = (u << 8) | b[k];
          auto v = Value::make(Value::Kind::Float);
          std::memcpy(&v->f, &u, 8);
          push(v);
          break;
        }
        case 'X':
          push_str(Value::Kind::Str, le<std::uint32_t>());
          break;
        case 0x8c:
          push_str(Value::Kind::Str, u8());
          break;
        case 0x8d:
          push_str(Value::Kind::Str, le<std::uint64_t>());
          break;
        case 'B':
          push_str(Value::Kind::Bytes, le<std::uint32_t>());
          break;
        case 'C':
          push_str(Value::Kind::Bytes, u8());
          break;
        case 0x8e:
          push_str(Value::Kind::Bytes, le<std::uint64_t>());
          break;
        case '0':
          pop();
          break;  // POP
        case '1':
          pop_mark();
          break;  // POP_MARK
        case '2':
          push(top());
          break;  // DUP
        default:
          detail::fail(where_, ": unsupported pickle opcode 0x", hex(op), " ('", printable(op), "') at byte ",
                       static_cast<long>(p_ - start_ - 1), ": a state dict does not use it");
      }
    }
  }

 private:
  static std::string hex(unsigned v) {
    const char* d = "0123456789abcdef";
    return std::string{d[(v >> 4) & 15], d[v & 15]};
  }
  static char printable(unsigned char c) { return c >= 32 && c < 127 ? static_cast<char>(c) : '?'; }

  const unsigned char* take(std::uint64_t n) {
    detail::require(n <= static_cast<std::uint64_t>(end_ - p_), where_, ": pickle data ends early (truncated?)");
    const unsigned char* at = p_;
    p_ += n;
    return at;
  }
  unsigned char u8() { return *take(1); }
  template <class T>
  T le() {
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }
  std::string line() {
    const unsigned char* nl = static_cast<const unsigned char*>(std::memchr(p_, '\n', static_cast<size_t>(end_ - p_)));
    detail::require(nl != nullptr, where_, ": pickle GLOBAL is not terminated");
    std::string s(reinterpret_cast<const char*>(p_), static_cast<size_t>(nl - p_));
    p_ = nl + 1;
    return s;
  }
  std::int64_t long_bytes(std::uint64_t n) {
    detail::require(n <= 8, where_, ": pickle integer of ", n, " bytes is too large");
    const unsigned char* b = take(n);
    std::uint64_t u = 0;
    for (std::uint64_t k = 0; k < n; ++k) u |= static_cast<std::uint64_t>(b[k]) << (8 * k);
    if (n > 0 && n < 8 && (b[n - 1] & 0x80)) u |= ~std::uint64_t(0) << (8 * n);  // sign-extend
    return static_cast<std::int64_t>(u);
  }

  void push(Ptr v) {
    detail::require(stack_.size() < kMaxStack, where_, ": pickle stack grows past ", kMaxStack, " values");
    stack_.push_back(std::move(v));
  }
  void push_int(std::int64_t i) {
    auto v = Value::make(Value::Kind::Int);
    v->i = i;
    push(v);
  }
  void push_str(Value::Kind k, std::uint64_t n) {
    auto v = Value::make(k);
    const unsigned char* b = take(n);
    v->s.assign(reinterpret_cast<const char*>(b), static_cast<size_t>(n));
    push(v);
  }
  void need(std::size_t n) {
    const std::size_t floor = marks_.empty() ? 0 : marks_.back();
    detail::require(stack_.size() >= floor + n, where_, ": pickle stack underflow");
  }
  Ptr pop() {
    need(1);
    Ptr v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Ptr& top() {
    need(1);
    return stack_.back();
  }
  std::vector<Ptr> pop_mark() {
    detail::require(!marks_.empty(), where_, ": pickle MARK missing");
    const std::size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Ptr> items(stack_.begin() + static_cast<long>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  Value& expect(Ptr& v, Value::Kind k, const char* op) {
    detail::require(v->kind == k, where_, ": pickle ", op, " on a ", v->kind_name());
    return *v;
  }
  void set_items(Value& d, const std::vector<Ptr>& kv) {
    detail::require(kv.size() % 2 == 0, where_, ": pickle SETITEMS with an odd number of values");
    for (size_t k = 0; k < kv.size(); k += 2) d.dict.emplace_back(kv[k], kv[k + 1]);
  }
  void memo_put(std::uint64_t idx) {
    detail::require(memo_.size() < kMaxMemo, where_, ": pickle memo grows past ", kMaxMemo, " entries");
    memo_[idx] = top();
  }
  Ptr memo_get(std::uint64_t idx) {
    auto it = memo_.find(idx);
    detail::require(it != memo_.end(), where_, ": pickle memo has no entry ", idx);
    return it->second;
  }

  Ptr global(const std::string& module, const std::string& name) {
    DType d;
    const bool known = (module == "collections" && name == "OrderedDict") ||
                       (module == "torch._utils" && (name == "_rebuild_tensor_v2" || name == "_rebuild_parameter" ||
                                                     name == "_rebuild_parameter_with_state")) ||
                       (module == "torch" && storage_dtype(name, d));
    detail::require(known, where_, ": unknown pickle global '", module, ".", name,
                    "': refused (vitmae reads state dicts of tensors and never runs code)");
    auto v = Value::make(Value::Kind::Global);
    v->s = module;
    v->s2 = name;
    return v;
  }

  Ptr persistent_load(const Ptr& pid) {
    detail::require(pid->kind == Value::Kind::Tuple && pid->items.size() == 5 &&
                        pid->items[0]->kind == Value::Kind::Str && pid->items[0]->s == "storage" &&
                        pid->items[1]->kind == Value::Kind::Global && pid->items[2]->kind == Value::Kind::Str &&
                        pid->items[4]->kind == Value::Kind::Int,
                    where_, ": unsupported persistent id: expected ('storage', type, key, location, numel)");
    auto v = Value::make(Value::Kind::Storage);
    detail::require(storage_dtype(pid->items[1]->s2, v->storage.dtype), where_, ": unsupported storage type '",
                    pid->items[1]->s2, "'");
    v->storage.key = pid->items[2]->s;
    v->storage.numel = pid->items[4]->i;
    detail::require(v->storage.numel >= 0, where_, ": storage '", v->storage.key, "' has a negative size");
    return v;
  }

  std::vector<std::int64_t> int_tuple(const Ptr& t, const char* what) {
    detail::require(t->kind == Value::Kind::Tuple, where_, ": tensor ", what, " must be a tuple of ints");
    std::vector<std::int64_t> out;
    for (const auto& x : t->items) {
      detail::require(x->kind == Value::Kind::Int, where_, ": tensor ", what, " must be a tuple of ints");
      out.push_back(x->i);
    }
    return out;
  }

  Ptr reduce(const Value& fn, const Value& args) {
    detail::require(fn.kind == Value::Kind::Global && args.kind == Value::Kind::Tuple, where_, ": pickle REDUCE on a ",
                    fn.kind_name(), " with ", args.kind_name(), " arguments");
    const std::string name = fn.s + "." + fn.s2;
    if (name == "collections.OrderedDict") {
      detail::require(args.items.empty(), where_, ": OrderedDict with arguments is not supported");
      return Value::make(Value::Kind::Dict);
    }
    if (name == "torch._utils._rebuild_tensor_v2") {
      detail::require(args.items.size() >= 4 && args.items[0]->kind == Value::Kind::Storage &&
                          args.items[1]->kind == Value::Kind::Int,
                      where_, ": _rebuild_tensor_v2 expects (storage, offset, size, stride, ...)");
      auto v = Value::make(Value::Kind::Tensor);
      v->tensor.storage = args.items[0]->storage;
      v->tensor.offset = args.items[1]->i;
      v->tensor.size = int_tuple(args.items[2], "size");
      v->tensor.stride = int_tuple(args.items[3], "stride");
      detail::require(v->tensor.size.size() == v->tensor.stride.size(), where_,
                      ": tensor size and stride differ in length");
      return v;
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      detail::require(!args.items.empty() && args.items[0]->kind == Value::Kind::Tensor, where_,
                      ": _rebuild_parameter expects a tensor");
      return args.items[0];
    }
    detail::fail(where_, ": '", name, "' cannot be called");
  }

  const unsigned char* p_;
  const unsigned char* end_;
  const unsigned char* start_ = p_;
  std::string where_;
  std::vector<Ptr> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<std::uint64_t, Ptr> memo_;
};

}  // namespace vitmae::io::pickle
