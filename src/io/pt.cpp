#include "flowmatch/io/pt.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <functional>
#include <sstream>
#include <stdexcept>

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/serialize.h>  // torch::pickle_save, torch::pickle_load

#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/npy.h"

namespace flowmatch::io {

void save_pt(const std::string& path, const at::Tensor& tensor) {
  if (!tensor.defined()) throw std::invalid_argument("save_pt: undefined tensor");
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(tensor.detach().to(at::kCPU).contiguous()));
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

void save_pt_tensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined()) throw std::invalid_argument("save_pt_tensors: tensor '" + name + "' is undefined");
    dict.insert(name, tensor.detach().to(at::kCPU).contiguous());
  }
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

namespace {

// A reader for what LibTorch 1.13's unpickler stops at in torch.save files: SETITEM, and the BUILD that
// gives a state_dict (an OrderedDict) its `_metadata`. It knows the protocol-2 opcodes torch.save
// writes, dictionaries (OrderedDict too), lists, tuples, numbers, strings and tensors; attributes set by
// BUILD are dropped, and anything else (another class) is refused by name.
struct PickleValue;
using PickleRef = std::shared_ptr<PickleValue>;
struct PickleValue {
  enum class Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Global, Storage, Tensor, Mark } kind = Kind::None;
  int64_t number = 0;
  double real = 0;
  std::string text;  // a string; a global's "module.name"; a storage's record key
  std::vector<PickleRef> items;
  std::vector<std::pair<PickleRef, PickleRef>> entries;
  at::ScalarType dtype = at::kFloat;
  at::Tensor tensor;
};

PickleRef make_value(PickleValue::Kind kind) {
  auto v = std::make_shared<PickleValue>();
  v->kind = kind;
  return v;
}

at::ScalarType storage_dtype(const std::string& global) {
  static const std::map<std::string, at::ScalarType> types = {
      {"torch.DoubleStorage", at::kDouble}, {"torch.FloatStorage", at::kFloat}, {"torch.HalfStorage", at::kHalf},
      {"torch.BFloat16Storage", at::kBFloat16}, {"torch.LongStorage", at::kLong}, {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort}, {"torch.CharStorage", at::kChar}, {"torch.ByteStorage", at::kByte},
      {"torch.BoolStorage", at::kBool}};
  auto it = types.find(global);
  if (it == types.end()) throw std::runtime_error("unsupported storage type " + global);
  return it->second;
}

c10::IValue unpickle_torch_save(const std::string& bytes) {
  std::istringstream in(bytes);
  caffe2::serialize::PyTorchStreamReader reader(&in);
  auto [pickle_data, pickle_size] = reader.getRecord("data.pkl");
  const std::string p(static_cast<const char*>(pickle_data.get()), pickle_size);
  std::vector<PickleRef> stack;
  std::map<int64_t, PickleRef> memo;
  std::map<std::string, at::Tensor> storages;
  size_t i = 0;
  auto need = [&](size_t n) {
    if (i + n > p.size()) throw std::runtime_error("the pickle ends inside an opcode");
  };
  auto unsigned_le = [&](size_t n) {
    need(n);
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i + k])) << (8 * k);
    i += n;
    return v;
  };
  auto pop = [&]() {
    if (stack.empty()) throw std::runtime_error("the pickle pops an empty stack");
    PickleRef v = stack.back();
    stack.pop_back();
    return v;
  };
  auto pop_to_mark = [&]() {
    std::vector<PickleRef> items;
    while (true) {
      PickleRef v = pop();
      if (v->kind == PickleValue::Kind::Mark) break;
      items.push_back(v);
    }
    std::reverse(items.begin(), items.end());
    return items;
  };
  auto push_string = [&](size_t n) {
    need(n);
    auto v = make_value(PickleValue::Kind::String);
    v->text = p.substr(i, n);
    i += n;
    stack.push_back(v);
  };
  auto top_of = [&](PickleValue::Kind kind, const char* what) -> PickleValue& {
    if (stack.empty() || stack.back()->kind != kind) throw std::runtime_error(std::string(what) + " without its container");
    return *stack.back();
  };
  auto integer = [](const PickleRef& v) {
    if (v->kind != PickleValue::Kind::Int) throw std::runtime_error("expected an integer in a tensor's description");
    return v->number;
  };
  auto integers = [&](const PickleRef& v) {
    if (v->kind != PickleValue::Kind::Tuple) throw std::runtime_error("expected a tuple of integers in a tensor's description");
    std::vector<int64_t> out;
    for (const auto& item : v->items) out.push_back(integer(item));
    return out;
  };
  while (true) {
    need(1);
    const unsigned char op = static_cast<unsigned char>(p[i++]);
    if (stack.size() > 100000 || memo.size() > 1000000) throw std::runtime_error("the pickle is too large");
    switch (op) {
      case 0x80: need(1); ++i; break;  // PROTO
      case '}': stack.push_back(make_value(PickleValue::Kind::Dict)); break;
      case ']': stack.push_back(make_value(PickleValue::Kind::List)); break;
      case ')': stack.push_back(make_value(PickleValue::Kind::Tuple)); break;
      case '(': stack.push_back(make_value(PickleValue::Kind::Mark)); break;
      case 'N': stack.push_back(make_value(PickleValue::Kind::None)); break;
      case 0x88: case 0x89: {
        auto v = make_value(PickleValue::Kind::Bool);
        v->number = op == 0x88;
        stack.push_back(v);
        break;
      }
      case 'K': case 'M': case 'J': {
        auto v = make_value(PickleValue::Kind::Int);
        v->number = op == 'K' ? static_cast<int64_t>(unsigned_le(1)) : op == 'M' ? static_cast<int64_t>(unsigned_le(2))
                                                                         : static_cast<int32_t>(unsigned_le(4));
        stack.push_back(v);
        break;
      }
      case 0x8a: {  // LONG1: little-endian two's complement
        const size_t n = unsigned_le(1);
        if (n > 8) throw std::runtime_error("an integer wider than 64 bits");
        uint64_t u = unsigned_le(n);
        if (n > 0 && n < 8 && (u >> (8 * n - 1)) & 1) u |= ~uint64_t{0} << (8 * n);
        auto v = make_value(PickleValue::Kind::Int);
        v->number = static_cast<int64_t>(u);
        stack.push_back(v);
        break;
      }
      case 'G': {  // BINFLOAT, big-endian
        need(8);
        uint64_t u = 0;
        for (int k = 0; k < 8; ++k) u = u << 8 | static_cast<unsigned char>(p[i + k]);
        i += 8;
        auto v = make_value(PickleValue::Kind::Float);
        std::memcpy(&v->real, &u, sizeof u);
        stack.push_back(v);
        break;
      }
      case 'X': case 'T': case 'B': push_string(unsigned_le(4)); break;
      case 'U': case 'C': case 0x8c: push_string(unsigned_le(1)); break;
      case 'c': {
        auto v = make_value(PickleValue::Kind::Global);
        for (int line = 0; line < 2; ++line) {
          const size_t end = p.find('\n', i);
          if (end == std::string::npos) throw std::runtime_error("a global without its newline");
          v->text += (line ? "." : "") + p.substr(i, end - i);
          i = end + 1;
        }
        stack.push_back(v);
        break;
      }
      case 'q': memo[static_cast<int64_t>(unsigned_le(1))] = stack.empty() ? nullptr : stack.back(); break;
      case 'r': memo[static_cast<int64_t>(unsigned_le(4))] = stack.empty() ? nullptr : stack.back(); break;
      case 'h': case 'j': {
        auto it = memo.find(static_cast<int64_t>(unsigned_le(op == 'h' ? 1 : 4)));
        if (it == memo.end() || !it->second) throw std::runtime_error("the pickle refers to an unknown memo entry");
        stack.push_back(it->second);
        break;
      }
      case 't': {
        auto v = make_value(PickleValue::Kind::Tuple);
        v->items = pop_to_mark();
        stack.push_back(v);
        break;
      }
      case 0x85: case 0x86: case 0x87: {
        auto v = make_value(PickleValue::Kind::Tuple);
        for (int k = 0; k < op - 0x84; ++k) v->items.insert(v->items.begin(), pop());
        stack.push_back(v);
        break;
      }
      case 's': {
        PickleRef value = pop(), key = pop();
        top_of(PickleValue::Kind::Dict, "SETITEM").entries.emplace_back(key, value);
        break;
      }
      case 'u': {
        auto items = pop_to_mark();
        if (items.size() % 2) throw std::runtime_error("SETITEMS with an odd count");
        auto& dict = top_of(PickleValue::Kind::Dict, "SETITEMS");
        for (size_t k = 0; k < items.size(); k += 2) dict.entries.emplace_back(items[k], items[k + 1]);
        break;
      }
      case 'a': {
        PickleRef value = pop();
        top_of(PickleValue::Kind::List, "APPEND").items.push_back(value);
        break;
      }
      case 'e': {
        auto items = pop_to_mark();
        auto& list = top_of(PickleValue::Kind::List, "APPENDS");
        list.items.insert(list.items.end(), items.begin(), items.end());
        break;
      }
      case 'b': pop(); break;  // BUILD: the attributes are dropped, the object stays
      case '0': pop(); break;
      case '1': pop_to_mark(); break;
      case '2': stack.push_back(stack.empty() ? throw std::runtime_error("DUP of nothing") : stack.back()); break;
      case 'Q': {  // BINPERSID: ('storage', type, key, location, numel)
        PickleRef pid = pop();
        if (pid->kind != PickleValue::Kind::Tuple || pid->items.size() < 3 || pid->items[1]->kind != PickleValue::Kind::Global ||
            pid->items[2]->kind != PickleValue::Kind::String) {
          throw std::runtime_error("a persistent id that is not a storage");
        }
        auto v = make_value(PickleValue::Kind::Storage);
        v->dtype = storage_dtype(pid->items[1]->text);
        v->text = pid->items[2]->text;
        stack.push_back(v);
        break;
      }
      case 'R': {
        PickleRef args = pop(), callable = pop();
        if (callable->kind != PickleValue::Kind::Global || args->kind != PickleValue::Kind::Tuple) {
          throw std::runtime_error("REDUCE of something that is not a global");
        }
        const std::string& name = callable->text;
        if (name == "collections.OrderedDict") {
          stack.push_back(make_value(PickleValue::Kind::Dict));
        } else if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
          if (args->items.size() < 4 || args->items[0]->kind != PickleValue::Kind::Storage) throw std::runtime_error("a tensor without its storage");
          const PickleValue& storage = *args->items[0];
          const int64_t offset = integer(args->items[1]);
          const std::vector<int64_t> size = integers(args->items[2]), stride = integers(args->items[3]);
          if (size.size() != stride.size()) throw std::runtime_error("a tensor whose size and stride differ in length");
          const std::string record = "data/" + storage.text;
          at::Tensor& all = storages[record];  // each storage read once, however many tensors view it
          if (!all.defined()) {
            if (!reader.hasRecord(record)) throw std::runtime_error("no record " + record + " for a tensor");
            auto [data, bytes_in_record] = reader.getRecord(record);
            const int64_t element = static_cast<int64_t>(c10::elementSize(storage.dtype));
            const int64_t count = static_cast<int64_t>(bytes_in_record) / element;
            all = at::empty({count}, at::TensorOptions().dtype(storage.dtype));
            std::memcpy(all.data_ptr(), data.get(), static_cast<size_t>(count * element));
          }
          if (all.scalar_type() != storage.dtype) throw std::runtime_error("record " + record + " is read as two dtypes");
          // The view must stay inside the storage and hold at most 2^30 elements; every product and
          // sum is checked for overflow.
          if (offset < 0) throw std::runtime_error("a tensor with a negative storage offset");
          int64_t last = offset, numel = 1;
          bool empty = false;
          for (size_t k = 0; k < size.size(); ++k) {
            if (size[k] < 0 || stride[k] < 0) throw std::runtime_error("a tensor with a negative size or stride");
            int64_t reach = 0;
            if (size[k] == 0) empty = true;
            if (__builtin_mul_overflow(size[k] == 0 ? 0 : size[k] - 1, stride[k], &reach) || __builtin_add_overflow(last, reach, &last) ||
                __builtin_mul_overflow(numel, size[k], &numel)) {
              throw std::runtime_error("a tensor whose size or stride overflows");
            }
          }
          if (numel > (int64_t{1} << 30)) throw std::runtime_error("a tensor of more than 2^30 elements");
          if (!empty && last >= all.numel()) throw std::runtime_error("a tensor reaching past its storage (" + record + ")");
          auto v = make_value(PickleValue::Kind::Tensor);
          v->tensor = all.as_strided(size, stride, empty ? 0 : offset).clone();
          stack.push_back(v);
        } else if (name == "torch._utils._rebuild_parameter") {
          if (args->items.empty() || args->items[0]->kind != PickleValue::Kind::Tensor) throw std::runtime_error("a parameter without its tensor");
          stack.push_back(args->items[0]);
        } else {
          throw std::runtime_error("the pickle calls " + name + ", which this reader does not know");
        }
        break;
      }
      case '.': {
        PickleRef top = pop();
        // Each value converted once (the memo lets a small pickle refer to one value many times: without
        // this, nested self-references would expand exponentially), and at most 10^6 values in all.
        std::map<const PickleValue*, c10::IValue> done;
        int64_t visited = 0;
        std::function<c10::IValue(const PickleRef&, int)> convert = [&](const PickleRef& v, int depth) -> c10::IValue {
          if (depth > 64) throw std::runtime_error("values nested deeper than 64");
          if (++visited > 1000000) throw std::runtime_error("more than 10^6 values");
          if (auto it = done.find(v.get()); it != done.end()) return it->second;
          c10::IValue out = [&]() -> c10::IValue {
          switch (v->kind) {
            case PickleValue::Kind::Tensor: return v->tensor;
            case PickleValue::Kind::Int: return v->number;
            case PickleValue::Kind::Bool: return static_cast<bool>(v->number);
            case PickleValue::Kind::Float: return v->real;
            case PickleValue::Kind::String: return v->text;
            case PickleValue::Kind::None: return c10::IValue();
            case PickleValue::Kind::Dict: {
              c10::impl::GenericDict dict(c10::AnyType::get(), c10::AnyType::get());
              for (const auto& [key, value] : v->entries) dict.insert_or_assign(convert(key, depth + 1), convert(value, depth + 1));
              return dict;
            }
            case PickleValue::Kind::Tuple: case PickleValue::Kind::List: {
              c10::impl::GenericList list(c10::AnyType::get());
              for (const auto& item : v->items) list.push_back(convert(item, depth + 1));
              return list;
            }
            default: throw std::runtime_error("the pickle holds a value this reader does not keep");
          }
          }();
          done.emplace(v.get(), out);
          return out;
        };
        c10::IValue result = convert(top, 0);
        // Break memo cycles (a list holding itself) so that the values are freed.
        for (auto& [key, value] : memo)
          if (value) value->items.clear(), value->entries.clear();
        return result;
      }
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        throw std::runtime_error(std::string("unsupported pickle opcode ") + hex);
      }
    }
  }
}

// The value a PyTorch file holds: LibTorch's unpickler, then the reader above for what it refuses.
c10::IValue read_pickle(const std::string& path, const char* what_it_should_be) {
  if (!std::filesystem::is_regular_file(path)) throw std::runtime_error("'" + path + "' does not exist or is not a file");
  const std::string bytes = read_file(path);
  try {
    return torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const c10::Error& e) {
    try {
      return unpickle_torch_save(bytes);
    } catch (const std::exception& ours) {
      const std::string what = e.what_without_backtrace();
      throw std::runtime_error("'" + path + "' is not " + what_it_should_be + ": " + what.substr(0, what.find('\n')) +
                               " (and this reader's own: " + ours.what() + ")");
    }
  }
}

}  // namespace

std::map<std::string, at::Tensor> load_pt_tensors(const std::string& path) {
  const c10::IValue value = read_pickle(path, "a PyTorch file");
  std::map<std::string, at::Tensor> out;
  std::function<void(const c10::IValue&, const std::string&, int)> walk = [&](const c10::IValue& v, const std::string& name, int depth) {
    if (depth > 16) throw std::runtime_error("'" + path + "': dictionaries nested deeper than 16");
    if (v.isTensor()) {
      if (!out.emplace(name, v.toTensor()).second) throw std::runtime_error("'" + path + "' has two tensors named '" + name + "'");
      return;
    }
    if (!v.isGenericDict()) {
      throw std::runtime_error("'" + path + "' holds a " + v.tagKind() + (name.empty() ? "" : " under '" + name + "'") +
                               "; expected tensors in dictionaries");
    }
    for (const auto& item : v.toGenericDict()) {
      if (!item.key().isString()) throw std::runtime_error("'" + path + "': a dictionary key is a " + item.key().tagKind() + ", expected a string");
      walk(item.value(), name.empty() ? item.key().toStringRef() : name + "." + item.key().toStringRef(), depth + 1);
    }
  };
  walk(value, "", 0);
  return out;
}

at::Tensor load_pt(const std::string& path) {
  const c10::IValue value = read_pickle(path, "a PyTorch tensor file");
  if (!value.isTensor()) {
    throw std::runtime_error("'" + path + "' holds a " + value.tagKind() + ", expected one tensor (torch.save(tensor, path))");
  }
  const at::Tensor tensor = value.toTensor();
  if (tensor.is_complex()) {
    throw std::runtime_error("'" + path + "' holds a complex tensor (" + std::string(c10::toString(tensor.scalar_type())) +
                             "); expected real numbers");
  }
  return tensor;
}

namespace {
bool is_pt(const std::string& path) { return std::filesystem::path(path).extension() == ".pt"; }
}  // namespace

void save_array(const std::string& path, const at::Tensor& tensor) {
  if (is_pt(path)) {
    save_pt(path, tensor);
  } else {
    save_npy(path, tensor);
  }
}

at::Tensor load_array(const std::string& path) { return is_pt(path) ? load_pt(path) : load_npy(path); }

}  // namespace flowmatch::io
