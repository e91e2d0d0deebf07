#include "flowmatch/distributed.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include <ATen/ATen.h>

#include "enum_names.h"
#include "flowmatch_build_config.h"  // FLOWMATCH_HAVE_GLOO, FLOWMATCH_HAVE_NCCL (found at configure time)

#if defined(FLOWMATCH_HAVE_GLOO)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO  // LibTorch's c10d headers hide ProcessGroupGloo without it
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#if defined(FLOWMATCH_HAVE_NCCL)
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace flowmatch::distributed {

namespace {
constexpr detail::EnumNames<Backend, 3> kBackendNames{
    {{Backend::Auto, "auto"}, {Backend::Gloo, "gloo"}, {Backend::NCCL, "nccl"}}};

int64_t parse_integer(const char* name, const char* text) {
  const std::string value = text;
  try {
    size_t used = 0;
    const long long v = std::stoll(value, &used);
    if (used != value.size()) throw std::invalid_argument("trailing characters");
    return v;
  } catch (const std::exception&) {
    throw std::invalid_argument(std::string("environment variable ") + name + "='" + value + "' is not an integer");
  }
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}
}  // namespace

Backend backend_from_string(const std::string& name) { return detail::enum_from_name(kBackendNames, name, "distributed backend"); }
std::string to_string(Backend backend) { return detail::enum_name(kBackendNames, backend); }

bool gloo_available() {
#if defined(FLOWMATCH_HAVE_GLOO)
  return true;
#else
  return false;
#endif
}

bool nccl_available() {
#if defined(FLOWMATCH_HAVE_NCCL)
  return true;
#else
  return false;
#endif
}

void validate(const DistributedOptions& o) {
  auto bad = [](const std::string& what, const std::string& value, const std::string& expected) {
    throw std::invalid_argument(what + " must be " + expected + ", got " + value);
  };
  if (o.world_size() < 1) bad("world size", std::to_string(o.world_size()), ">= 1");
  if (o.rank() < 0 || o.rank() >= o.world_size()) {
    bad("rank", std::to_string(o.rank()), "in [0, " + std::to_string(o.world_size()) + ")");
  }
  if (o.local_rank() < 0) bad("local rank", std::to_string(o.local_rank()), ">= 0");
  if (o.master_port() < 1 || o.master_port() > 65535) bad("master port", std::to_string(o.master_port()), "in [1, 65535]");
  if (o.master_addr().empty()) bad("master address", "''", "a host name or address");
  if (!(o.timeout_s() > 0) || !std::isfinite(o.timeout_s())) bad("timeout", std::to_string(o.timeout_s()), "finite and > 0 seconds");
  if (o.bucket_bytes() < 1024) bad("bucket size", std::to_string(o.bucket_bytes()), ">= 1024 bytes");
}

DistributedOptions options_from_environment() {
  auto required = [](const char* name) {
    const char* v = std::getenv(name);
    if (!v || !*v) {
      throw std::invalid_argument(std::string("environment variable ") + name +
                                  " is not set (start the processes with 'flowmatch launch' or torchrun, or set RANK, "
                                  "WORLD_SIZE, MASTER_ADDR and MASTER_PORT)");
    }
    return v;
  };
  DistributedOptions o;
  o.rank(parse_integer("RANK", required("RANK")));
  o.world_size(parse_integer("WORLD_SIZE", required("WORLD_SIZE")));
  if (const char* v = std::getenv("LOCAL_RANK"); v && *v) o.local_rank(parse_integer("LOCAL_RANK", v));
  if (const char* v = std::getenv("MASTER_ADDR"); v && *v) o.master_addr(v);
  if (const char* v = std::getenv("MASTER_PORT"); v && *v) o.master_port(parse_integer("MASTER_PORT", v));
  try {
    validate(o);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("distributed environment: ") + e.what());
  }
  return o;
}

uint64_t rank_seed(uint64_t seed, int64_t rank) {
  if (rank == 0) return seed;
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(rank + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

#if defined(FLOWMATCH_HAVE_GLOO)

struct DataParallel::Impl {
  c10::intrusive_ptr<::c10d::Store> store;
  c10::intrusive_ptr<::c10d::ProcessGroupGloo> gloo;
#if defined(FLOWMATCH_HAVE_NCCL)
  c10::intrusive_ptr<::c10d::ProcessGroupNCCL> nccl;
#endif
  std::vector<at::Tensor> buckets;                // flat buffers, reused every step
  std::vector<std::vector<int64_t>> bucket_items;  // parameter indices per bucket
  std::vector<int64_t> layout_numel;              // the parameters' sizes the buckets were built for
  int64_t layout_extra = -1;                      // and the number of extras

  template <typename F>
  auto run(F&& f) -> decltype(f(gloo)) {
#if defined(FLOWMATCH_HAVE_NCCL)
    if (nccl) return f(nccl);
#endif
    return f(gloo);
  }
};

namespace {
// c10d reports a dead peer or a timeout as c10::Error (or std::runtime_error from Gloo);
// the message is made to say which collective and which rank saw it.
template <typename F>
void collective(const char* what, int64_t rank, F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    throw std::runtime_error(std::string("distributed ") + what + " failed on rank " + std::to_string(rank) +
                             " (another rank died, hung past the timeout, or cannot be reached): " +
                             e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("distributed ") + what + " failed on rank " + std::to_string(rank) +
                             " (another rank died, hung past the timeout, or cannot be reached): " + e.what());
  }
}

std::string one_line(std::string s) {
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}
}  // namespace

DataParallel::DataParallel(DistributedOptions options, c10::Device device)
    : impl_(std::make_unique<Impl>()), options_(std::move(options)), device_(device) {
  validate(options_);
  Backend wanted = options_.backend();
  if (wanted == Backend::Auto) wanted = (device_.is_cuda() && nccl_available()) ? Backend::NCCL : Backend::Gloo;
  if (wanted == Backend::NCCL && !nccl_available()) {
    throw std::invalid_argument("distributed backend nccl is not available: this LibTorch was built without NCCL (use gloo)");
  }
  if (wanted == Backend::NCCL && !device_.is_cuda()) {
    throw std::invalid_argument("distributed backend nccl needs a CUDA device, got " + device_.str());
  }
  backend_ = wanted;
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options_.timeout_s() * 1000));
  try {
    ::c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(options_.master_port());
    store_options.isServer = options_.rank() == 0;
    store_options.numWorkers = static_cast<std::size_t>(options_.world_size());
    store_options.waitWorkers = true;
    store_options.timeout = timeout;
    impl_->store = c10::make_intrusive<::c10d::TCPStore>(options_.master_addr(), store_options);
  } catch (const std::exception& e) {
    throw std::runtime_error("distributed rendezvous at " + options_.master_addr() + ":" +
                             std::to_string(options_.master_port()) + " failed on rank " + std::to_string(options_.rank()) +
                             " (within " + std::to_string(options_.timeout_s()) + " s): " + one_line(e.what()));
  }
  try {
    if (backend_ == Backend::Gloo) {
      auto gloo_options = ::c10d::ProcessGroupGloo::Options::create(timeout);
      // Same choice as torch.distributed: an interface named by GLOO_SOCKET_IFNAME, the loopback
      // device when the master is on this machine's loopback, else the host name's address.
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
        gloo_options->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (is_loopback(options_.master_addr())) {
        gloo_options->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        gloo_options->devices.push_back(::c10d::ProcessGroupGloo::createDefaultDevice());
      }
      gloo_options->threads = 2;
      impl_->gloo = c10::make_intrusive<::c10d::ProcessGroupGloo>(impl_->store, static_cast<int>(options_.rank()),
                                                                  static_cast<int>(options_.world_size()), gloo_options);
    } else {
#if defined(FLOWMATCH_HAVE_NCCL)
      auto nccl_options = ::c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = timeout;
      impl_->nccl = c10::make_intrusive<::c10d::ProcessGroupNCCL>(impl_->store, static_cast<int>(options_.rank()),
                                                                  static_cast<int>(options_.world_size()), nccl_options);
#endif
    }
  } catch (const std::exception& e) {
    throw std::runtime_error("distributed process group (" + to_string(backend_) + ") failed on rank " +
                             std::to_string(options_.rank()) + ": " + one_line(e.what()));
  }
}

DataParallel::~DataParallel() = default;

void DataParallel::broadcast(const std::vector<at::Tensor>& tensors, int64_t root) {
  if (root < 0 || root >= world_size()) throw std::invalid_argument("broadcast root " + std::to_string(root) + " is not a rank");
  collective("broadcast", rank(), [&] {
    ::c10d::BroadcastOptions o;
    o.rootRank = root;
    for (const auto& t : tensors) {
      // c10d broadcasts dense contiguous tensors; parameters are, but a view may not be.
      at::Tensor buffer = t.is_contiguous() ? t : t.contiguous();
      if (backend_ == Backend::NCCL && !buffer.is_cuda()) buffer = buffer.to(device_);  // NCCL moves CUDA memory only
      std::vector<at::Tensor> one{buffer};
      impl_->run([&](auto& pg) { return pg->broadcast(one, o); })->wait();
      if (!buffer.is_same(t)) {
        at::NoGradGuard no_grad;
        t.copy_(buffer);
      }
    }
  });
}

std::vector<double> DataParallel::average_gradients(const std::vector<at::Tensor>& parameters,
                                                    const std::vector<double>& extras) {
  const auto start = std::chrono::steady_clock::now();
  if (parameters.empty()) throw std::invalid_argument("average_gradients: no parameters");
  const auto dtype = parameters.front().scalar_type();
  const auto device = parameters.front().device();
  std::vector<int64_t> numel;
  for (const auto& p : parameters) {
    if (p.scalar_type() != dtype || p.device() != device) {
      throw std::invalid_argument("average_gradients: parameters must share one dtype and device");
    }
    numel.push_back(p.numel());
  }
  // Buckets are laid out once for a parameter list (greedy by size, in order); the extras ride
  // in the last bucket's tail.
  const int64_t extra = static_cast<int64_t>(extras.size());
  if (numel != impl_->layout_numel || extra != impl_->layout_extra) {
    impl_->buckets.clear();
    impl_->bucket_items.clear();
    const int64_t limit = std::max<int64_t>(1, options_.bucket_bytes() / static_cast<int64_t>(c10::elementSize(dtype)));
    std::vector<int64_t> current;
    int64_t size = 0;
    for (size_t k = 0; k < parameters.size(); ++k) {
      if (!current.empty() && size + numel[k] > limit) {
        impl_->bucket_items.push_back(current);
        impl_->buckets.push_back(at::empty({size}, parameters.front().options()));
        current.clear();
        size = 0;
      }
      current.push_back(static_cast<int64_t>(k));
      size += numel[k];
    }
    impl_->bucket_items.push_back(current);
    impl_->buckets.push_back(at::empty({size + extra}, parameters.front().options()));
    impl_->layout_numel = numel;
    impl_->layout_extra = extra;
  }
  at::NoGradGuard no_grad;
  const double scale = 1.0 / static_cast<double>(world_size());
  std::vector<c10::intrusive_ptr<::c10d::Work>> work;
  collective("all-reduce of gradients", rank(), [&] {
    for (size_t b = 0; b < impl_->buckets.size(); ++b) {
      at::Tensor& flat = impl_->buckets[b];
      int64_t offset = 0;
      for (auto k : impl_->bucket_items[b]) {
        const at::Tensor& p = parameters[static_cast<size_t>(k)];
        at::Tensor slot = flat.narrow(0, offset, p.numel());
        if (p.grad().defined()) {
          slot.view(p.sizes()).copy_(p.grad());
        } else {
          slot.zero_();
        }
        offset += p.numel();
      }
      if (b + 1 == impl_->buckets.size()) {
        for (int64_t e = 0; e < extra; ++e) flat[offset + e].fill_(extras[static_cast<size_t>(e)]);
      }
      std::vector<at::Tensor> one{flat};
      work.push_back(impl_->run([&](auto& pg) { return pg->allreduce(one); }));  // all buckets in flight
    }
    for (auto& w : work) w->wait();
  });
  std::vector<double> summed(extras.size());
  for (size_t b = 0; b < impl_->buckets.size(); ++b) {
    const at::Tensor& flat = impl_->buckets[b];
    int64_t offset = 0;
    for (auto k : impl_->bucket_items[b]) {
      const at::Tensor& p = parameters[static_cast<size_t>(k)];
      at::Tensor slot = flat.narrow(0, offset, p.numel()).view(p.sizes());
      if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
      p.mutable_grad().copy_(slot).mul_(scale);
      offset += p.numel();
    }
    if (b + 1 == impl_->buckets.size() && extra > 0) {
      at::Tensor tail = flat.narrow(0, offset, extra).to(at::kCPU, at::kDouble);
      for (int64_t e = 0; e < extra; ++e) summed[static_cast<size_t>(e)] = tail[e].item<double>();
    }
  }
  communication_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++communication_calls_;
  return summed;
}

std::string DataParallel::broadcast_string(const std::string& value, int64_t root) {
  at::Tensor length = at::empty({1}, at::kLong);
  length.fill_(static_cast<int64_t>(value.size()));
  broadcast({length}, root);
  const int64_t n = length.item<int64_t>();
  if (n < 0) throw std::runtime_error("distributed broadcast: negative string length " + std::to_string(n));
  if (n == 0) return {};
  at::Tensor bytes = at::empty({n}, at::kByte);
  if (rank() == root) std::memcpy(bytes.data_ptr(), value.data(), static_cast<size_t>(n));
  broadcast({bytes}, root);
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(n));
}

std::vector<at::Tensor> DataParallel::all_gather(const at::Tensor& value) {
  const bool stage = backend_ == Backend::NCCL && !value.is_cuda();  // NCCL moves CUDA memory only
  at::Tensor input_tensor = stage ? value.to(device_) : value.contiguous();
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int64_t r = 0; r < world_size(); ++r) outputs[0].push_back(at::empty_like(input_tensor));
  std::vector<at::Tensor> input{input_tensor};
  collective("all-gather", rank(), [&] { impl_->run([&](auto& pg) { return pg->allgather(outputs, input); })->wait(); });
  if (stage)
    for (auto& t : outputs[0]) t = t.to(value.device());
  return outputs[0];
}

void DataParallel::barrier() {
  collective("barrier", rank(), [&] {
    // Gloo's barrier is a collective like the others (it honours the timeout).
    impl_->run([&](auto& pg) { return pg->barrier(); })->wait();
  });
}

#else  // no c10d Gloo in this build

struct DataParallel::Impl {};

DataParallel::DataParallel(DistributedOptions options, c10::Device device)
    : options_(std::move(options)), device_(device) {
  validate(options_);
  throw std::runtime_error("this flowmatch was built without c10d Gloo (LibTorch's distributed headers or "
                           "gloo headers were not found at configure time): distributed training is unavailable");
}
DataParallel::~DataParallel() = default;
void DataParallel::broadcast(const std::vector<at::Tensor>&, int64_t) {}
std::vector<double> DataParallel::average_gradients(const std::vector<at::Tensor>&, const std::vector<double>& e) { return e; }
std::string DataParallel::broadcast_string(const std::string& value, int64_t) { return value; }
std::vector<at::Tensor> DataParallel::all_gather(const at::Tensor& value) { return {value}; }
void DataParallel::barrier() {}

#endif

}  // namespace flowmatch::distributed
