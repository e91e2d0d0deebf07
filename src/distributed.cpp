#include "flowmatch/distributed.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>
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

using Clock = std::chrono::steady_clock;

// Heartbeats. Each rank runs a thread with its own store connection that, every second, publishes
// "<beats> <collectives>" under flowmatch/beat/<rank> and reads everyone else's. The waiting thread
// only looks at what that thread last saw, so it never blocks on the store: a TCPStore read has no
// timeout, and when rank 0 (which hosts the store) is stopped, the heartbeat thread blocks, every
// heartbeat ages, and rank 0 is named first. A rank whose heartbeat still changes is alive; one whose
// collective count lags is late, not dead.
struct Heartbeat {
  int64_t beats = -1, collectives = -1;
};

struct HeartbeatState {
  c10::intrusive_ptr<::c10d::TCPStore> store;
  int64_t rank = 0, world = 1;
  std::atomic<int64_t> collectives{0};
  std::mutex mutex;  // guards everything below
  std::condition_variable wake;
  bool stop = false, done = false;
  std::vector<Heartbeat> seen;                 // per rank, as last read
  std::vector<Clock::time_point> changed;       // when each rank's beat count last changed

  static bool read(::c10d::TCPStore& store, int64_t r, Heartbeat& h) {
    const std::string key = "flowmatch/beat/" + std::to_string(r);
    if (!store.check({key})) return false;
    const auto bytes = store.get(key);
    const std::string text(bytes.begin(), bytes.end());
    const auto space = text.find(' ');
    if (space == std::string::npos) return false;
    h.beats = std::stoll(text.substr(0, space));
    h.collectives = std::stoll(text.substr(space + 1));
    return true;
  }

  // The thread's body: holds its own reference, so a thread stuck on a stopped store can be detached.
  static void beat(std::shared_ptr<HeartbeatState> self) {
    const std::string key = "flowmatch/beat/" + std::to_string(self->rank);
    int64_t beats = 0;
    try {
      for (;;) {
        const std::string value = std::to_string(++beats) + " " + std::to_string(self->collectives.load());
        self->store->set(key, std::vector<uint8_t>(value.begin(), value.end()));
        for (int64_t r = 0; r < self->world; ++r) {
          if (r == self->rank) continue;
          Heartbeat h;
          if (!read(*self->store, r, h)) continue;
          std::lock_guard<std::mutex> lock(self->mutex);
          auto& seen = self->seen[static_cast<size_t>(r)];
          if (h.beats != seen.beats) self->changed[static_cast<size_t>(r)] = Clock::now();
          seen = h;
        }
        std::unique_lock<std::mutex> lock(self->mutex);
        if (self->wake.wait_for(lock, std::chrono::seconds(1), [&] { return self->stop; })) break;
      }
    } catch (const std::exception&) {
      // The store is gone (rank 0 ended or died): the heartbeats age, and waits say so.
    }
    std::lock_guard<std::mutex> lock(self->mutex);
    self->done = true;
    self->wake.notify_all();
  }
};

struct DataParallel::Impl {
  c10::intrusive_ptr<::c10d::TCPStore> store;
  c10::intrusive_ptr<::c10d::ProcessGroupGloo> gloo;
#if defined(FLOWMATCH_HAVE_NCCL)
  c10::intrusive_ptr<::c10d::ProcessGroupNCCL> nccl;
#endif
  std::vector<at::Tensor> buckets;                // flat buffers, reused every step
  std::vector<std::vector<int64_t>> bucket_items;  // parameter indices per bucket
  std::vector<int64_t> layout_numel;              // the parameters' sizes the buckets were built for
  int64_t layout_extra = -1;                      // and the number of extras

  std::shared_ptr<HeartbeatState> heartbeat;
  std::thread beat_thread;
  bool abandoned = false;  // a collective is still in flight in Gloo's threads (we gave up on it)
  int64_t rank = 0, world = 1;
  double timeout_s = 60;

  ~Impl() {
    if (heartbeat) {
      std::unique_lock<std::mutex> lock(heartbeat->mutex);
      heartbeat->stop = true;
      heartbeat->wake.notify_all();
      // A thread blocked on a stopped store does not come back: leave it (it owns its state).
      const bool finished = heartbeat->wake.wait_for(lock, std::chrono::seconds(3), [&] { return heartbeat->done; });
      lock.unlock();
      if (finished) {
        beat_thread.join();
      } else {
        beat_thread.detach();
      }
    }
    // A process group with a collective still waiting on a hung peer would block its destructor
    // until Gloo's own timeout; the process is about to report the hang and exit, so it is left.
    if (abandoned) {
      (void)gloo.release();
#if defined(FLOWMATCH_HAVE_NCCL)
      (void)nccl.release();
#endif
      (void)store.release();
    }
  }

  // Seconds without a heartbeat after which a waiting rank names the silent one and gives up: 15 s,
  // or less than the collective timeout when that is shorter (so the heartbeat speaks first).
  double hang_seconds() const { return std::min(0.8 * timeout_s, 15.0); }

  std::vector<Heartbeat> snapshot(std::vector<Clock::time_point>* changed = nullptr) {
    std::lock_guard<std::mutex> lock(heartbeat->mutex);
    if (changed) *changed = heartbeat->changed;
    return heartbeat->seen;
  }

  // The first rank whose heartbeat has not changed for hang_seconds, or -1.
  int64_t silent_rank() {
    std::vector<Clock::time_point> changed;
    snapshot(&changed);
    const auto now = Clock::now();
    for (int64_t r = 0; r < world; ++r) {
      if (r != rank && std::chrono::duration<double>(now - changed[static_cast<size_t>(r)]).count() > hang_seconds()) return r;
    }
    return -1;
  }

  std::string silent_message(int64_t r) const {
    std::string s = "rank " + std::to_string(r) + " stopped answering (no heartbeat for " +
                    std::to_string(static_cast<int64_t>(hang_seconds())) + " s: it is stopped, hung or dead";
    if (r == 0) s += "; rank 0 also holds the rendezvous store";
    return s + ")";
  }

  // After a collective failed: which peer is to blame? One whose heartbeat does not change over
  // two beats is gone; else the one whose collective count lags is late (alive, not at the collective).
  std::string diagnose() {
    if (!heartbeat) return "";
    // The heartbeat thread reads once a second: after 1.2 s every reading postdates the failure;
    // a live rank then beats at least twice in the next 2.5 s.
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    const auto before = snapshot();
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    const auto after = snapshot();
    const int64_t mine = heartbeat->collectives.load();
    int64_t late = -1, late_count = mine;
    for (int64_t r = 0; r < world; ++r) {
      if (r == rank) continue;
      const auto& now = after[static_cast<size_t>(r)];
      if (now.beats == before[static_cast<size_t>(r)].beats) {
        return "rank " + std::to_string(r) + " is gone (its heartbeat stopped: it died, was stopped, or its machine is unreachable)";
      }
      if (now.collectives < late_count) {
        late = r;
        late_count = now.collectives;
      }
    }
    if (late >= 0) {
      return "rank " + std::to_string(late) + " is alive but late (it has entered " + std::to_string(late_count) +
             " collectives, this rank " + std::to_string(mine) + ")";
    }
    return "";
  }

  // Waits for a Gloo collective in one-second slices, looking at the others' heartbeats in between,
  // so a silent peer is named after hang_seconds instead of after Gloo's timeout. NCCL waits as is.
  void wait_watching(const c10::intrusive_ptr<::c10d::Work>& work) {
    if (!heartbeat || !gloo
#if defined(FLOWMATCH_HAVE_NCCL)
        || nccl
#endif
    ) {
      work->wait();
      return;
    }
    for (;;) {
      try {
        work->wait(std::chrono::milliseconds(1000));
        return;
      } catch (const c10::Error&) {
        if (work->isCompleted()) throw;  // the collective itself failed
      }
      if (const int64_t r = silent_rank(); r >= 0) {
        abandoned = true;
        throw std::runtime_error(silent_message(r));
      }
    }
  }

  void start_heartbeat(const std::string& host, const ::c10d::TCPStoreOptions& base) {
    ::c10d::TCPStoreOptions client = base;
    client.isServer = false;
    client.waitWorkers = false;
    client.numWorkers = c10::nullopt;
    auto state = std::make_shared<HeartbeatState>();
    state->store = c10::make_intrusive<::c10d::TCPStore>(host, client);
    state->rank = rank;
    state->world = world;
    state->seen.assign(static_cast<size_t>(world), Heartbeat{});
    state->changed.assign(static_cast<size_t>(world), Clock::now());
    heartbeat = state;
    beat_thread = std::thread(&HeartbeatState::beat, state);
  }

  // c10d reports a dead peer or a timeout as c10::Error (or std::runtime_error from Gloo); the
  // message says which collective, which rank saw it and, from the heartbeats, which peer failed.
  template <typename F>
  void collective(const char* what, F&& f) {
    if (heartbeat) ++heartbeat->collectives;
    auto fail = [&](const std::string& cause) {
      const std::string head = std::string("distributed ") + what + " failed on rank " + std::to_string(rank) + ": ";
      if (abandoned) throw std::runtime_error(head + cause);  // cause names the silent rank
      const std::string blame = diagnose();
      throw std::runtime_error(head + (blame.empty() ? "another rank died, hung past the timeout, or cannot be reached" : blame) +
                               " (" + cause + ")");
    };
    try {
      f();
    } catch (const c10::Error& e) {
      fail(first_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      fail(first_line(e.what()));
    }
  }

  static std::string first_line(std::string s) {
    const auto nl = s.find('\n');
    return nl == std::string::npos ? s : s.substr(0, nl);
  }

  template <typename F>
  auto run(F&& f) -> decltype(f(gloo)) {
#if defined(FLOWMATCH_HAVE_NCCL)
    if (nccl) return f(nccl);
#endif
    return f(gloo);
  }
};


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
  impl_->rank = options_.rank();
  impl_->world = options_.world_size();
  impl_->timeout_s = options_.timeout_s();
  const auto deadline = Clock::now() + timeout;
  const std::string where = options_.master_addr() + ":" + std::to_string(options_.master_port());
  auto rendezvous_failed = [&](const std::string& why) {
    throw std::runtime_error("distributed rendezvous at " + where + " failed on rank " + std::to_string(options_.rank()) +
                             ": " + why);
  };
  ::c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(options_.master_port());
  store_options.isServer = options_.rank() == 0;
  store_options.waitWorkers = false;  // the wait below honours the timeout and names who is missing
  store_options.timeout = timeout;
  try {
    impl_->store = c10::make_intrusive<::c10d::TCPStore>(options_.master_addr(), store_options);
    impl_->store->set("flowmatch/joined/" + std::to_string(options_.rank()), std::vector<uint8_t>{1});
    impl_->store->add("flowmatch/joined", 1);
  } catch (const std::exception& e) {
    rendezvous_failed(Impl::first_line(e.what()));
  }
  // Everyone joined, or the missing ranks by name.
  for (;;) {
    int64_t joined = 0;
    try {
      joined = impl_->store->add("flowmatch/joined", 0);
    } catch (const std::exception& e) {
      rendezvous_failed("the store at rank 0 stopped answering: " + Impl::first_line(e.what()));
    }
    if (joined >= options_.world_size()) break;
    if (Clock::now() >= deadline) {
      std::string missing;
      int64_t count = 0;
      for (int64_t r = 0; r < options_.world_size(); ++r) {
        bool here = false;
        try {
          here = impl_->store->check({"flowmatch/joined/" + std::to_string(r)});
        } catch (const std::exception&) {
        }
        if (!here && count++ < 8) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      }
      if (count > 8) missing += ", ...";
      rendezvous_failed(std::to_string(joined) + " of " + std::to_string(options_.world_size()) + " ranks joined within " +
                        std::to_string(static_cast<int64_t>(options_.timeout_s())) + " s (--dist-timeout); missing: rank" +
                        (count > 1 ? "s " : " ") + missing);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
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
                             std::to_string(options_.rank()) + ": " + Impl::first_line(e.what()));
  }
  try {
    impl_->start_heartbeat(options_.master_addr(), store_options);
  } catch (const std::exception& e) {
    rendezvous_failed("heartbeat connection: " + Impl::first_line(e.what()));
  }
}

DataParallel::~DataParallel() = default;

void DataParallel::broadcast(const std::vector<at::Tensor>& tensors, int64_t root) {
  if (root < 0 || root >= world_size()) throw std::invalid_argument("broadcast root " + std::to_string(root) + " is not a rank");
  impl_->collective("broadcast", [&] {
    ::c10d::BroadcastOptions o;
    o.rootRank = root;
    for (const auto& t : tensors) {
      // c10d broadcasts dense contiguous tensors; parameters are, but a view may not be.
      at::Tensor buffer = t.is_contiguous() ? t : t.contiguous();
      if (backend_ == Backend::NCCL && !buffer.is_cuda()) buffer = buffer.to(device_);  // NCCL moves CUDA memory only
      std::vector<at::Tensor> one{buffer};
      impl_->wait_watching(impl_->run([&](auto& pg) { return pg->broadcast(one, o); }));
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
  impl_->collective("all-reduce of gradients", [&] {
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
    for (auto& w : work) impl_->wait_watching(w);
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
  impl_->collective("all-gather", [&] { impl_->wait_watching(impl_->run([&](auto& pg) { return pg->allgather(outputs, input); })); });
  if (stage)
    for (auto& t : outputs[0]) t = t.to(value.device());
  return outputs[0];
}

void DataParallel::barrier() {
  impl_->collective("barrier", [&] {
    // Gloo's barrier is a collective like the others (it honours the timeout).
    impl_->wait_watching(impl_->run([&](auto& pg) { return pg->barrier(); }));
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
