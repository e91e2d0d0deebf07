#include "flowmatch/models/egnn.h"

#include <cmath>
#include <stdexcept>

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include "flowmatch/models/transformer.h"

namespace flowmatch::models {

namespace {

const std::vector<std::string> kEgnnUserOptions = {"width", "depth", "attention", "coordinate_range", "time_features"};

torch::nn::Linear linear(int64_t in, int64_t out, bool bias = true) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

void check(const EGNNOptions& o) {
  auto bad = [&](const std::string& what) { throw std::invalid_argument("egnn: " + what); };
  if (o.particles() < 2) bad("needs at least 2 particles, got " + std::to_string(o.particles()));
  if (o.particle_dim() < 1) bad("particle dimension must be at least 1, got " + std::to_string(o.particle_dim()));
  if (o.width() < 1) bad("width must be at least 1, got " + std::to_string(o.width()));
  if (o.depth() < 1) bad("depth (layers) must be at least 1, got " + std::to_string(o.depth()));
  if (!(o.coordinate_range() > 0) || !std::isfinite(o.coordinate_range())) {
    bad("coordinate-range must be positive, got " + std::to_string(o.coordinate_range()));
  }
  if (o.time_features() < 0 || o.time_features() % 2 != 0) bad("time-features must be even and >= 0, got " + std::to_string(o.time_features()));
}

}  // namespace

EGNNImpl::EGNNImpl(EGNNOptions options) : options_(std::move(options)) {
  check(options_);
  const int64_t w = options_.width();
  embed_ = register_module("embed", linear(1 + options_.time_features(), w));
  edge1_ = register_module("edge1", torch::nn::ModuleList());
  edge2_ = register_module("edge2", torch::nn::ModuleList());
  gate_ = register_module("gate", torch::nn::ModuleList());
  node1_ = register_module("node1", torch::nn::ModuleList());
  node2_ = register_module("node2", torch::nn::ModuleList());
  coord1_ = register_module("coord1", torch::nn::ModuleList());
  coord2_ = register_module("coord2", torch::nn::ModuleList());
  for (int64_t l = 0; l < options_.depth(); ++l) {
    edge1_->push_back(linear(2 * w + 1, w));
    edge2_->push_back(linear(w, w));
    if (options_.attention()) gate_->push_back(linear(w, 1));
    if (l + 1 < options_.depth()) {  // the last layer's features would reach nothing
      node1_->push_back(linear(2 * w, w));
      node2_->push_back(linear(w, w));
    }
    coord1_->push_back(linear(w, w));
    auto last = linear(w, 1, /*bias=*/false);
    torch::nn::init::xavier_uniform_(last->weight, 0.001);  // small first moves, as in EGNN
    coord2_->push_back(last);
  }
}

at::Tensor EGNNImpl::forward(const at::Tensor& x, const at::Tensor& t) { return run(x, t, at::Tensor()); }

at::Tensor EGNNImpl::forward_with(const at::Tensor& x, const at::Tensor& t, const Conditioning& c) {
  if (c.labels.defined() || c.context.defined() || c.context_mask.defined()) {
    throw std::invalid_argument("egnn takes a particle mask only (no labels or token context)");
  }
  return run(x, t, c.mask);
}

at::Tensor EGNNImpl::run(const at::Tensor& x_in, const at::Tensor& t, const at::Tensor& mask_in) {
  const int64_t n = options_.particles(), d = options_.particle_dim(), w = options_.width();
  TORCH_CHECK(x_in.dim() >= 2 && x_in.numel() == x_in.size(0) * n * d, "egnn: x must be (B, ", n * d, ") or (B, ", n, ", ", d,
              "), got ", x_in.sizes());
  const int64_t b = x_in.size(0);
  at::Tensor x = x_in.reshape({b, n, d});
  at::Tensor mask = mask_in.defined() ? mask_in.to(x.device()) : at::ones({b, n}, x.options().dtype(at::kBool));
  TORCH_CHECK(mask.sizes() == at::IntArrayRef({b, n}), "egnn: mask must be (", b, ", ", n, "), got ", mask.sizes());
  mask = mask.to(at::kBool);
  at::Tensor node_mask = mask.to(x.scalar_type()).unsqueeze(2);  // (B, n, 1)
  at::Tensor pair_mask = (mask.unsqueeze(2) & mask.unsqueeze(1) &
                          at::eye(n, x.options().dtype(at::kBool)).logical_not().unsqueeze(0))
                             .to(x.scalar_type())
                             .unsqueeze(3);                                              // (B, n, n, 1)
  at::Tensor neighbours = pair_mask.sum(2).clamp_min(1);                                  // (B, n, 1)

  at::Tensor tcol = time_column(t, b, x.options());
  at::Tensor tf = options_.time_features() > 0
                      ? at::cat({tcol, sinusoidal_time_features(t, b, options_.time_features(), x.options())}, 1)
                      : tcol;
  at::Tensor h = embed_->forward(tf).unsqueeze(1).expand({b, n, w}) * node_mask;
  const at::Tensor x0 = x;
  for (int64_t l = 0; l < options_.depth(); ++l) {
    at::Tensor diff = x.unsqueeze(2) - x.unsqueeze(1);                   // (B, n, n, d): x_i − x_j
    at::Tensor d2 = diff.square().sum(3, /*keepdim=*/true);              // (B, n, n, 1)
    at::Tensor edge_in = at::cat({h.unsqueeze(2).expand({b, n, n, w}), h.unsqueeze(1).expand({b, n, n, w}), d2}, 3);
    at::Tensor m = at::silu(edge1_[l]->as<torch::nn::Linear>()->forward(edge_in));
    m = at::silu(edge2_[l]->as<torch::nn::Linear>()->forward(m));
    if (options_.attention()) m = m * at::sigmoid(gate_[l]->as<torch::nn::Linear>()->forward(m));
    m = m * pair_mask;
    // Coordinates: x_i += mean_j (x_i − x_j)/(‖x_i − x_j‖ + 1)·range·tanh(φ(m_ij)).
    at::Tensor weight = at::tanh(coord2_[l]->as<torch::nn::Linear>()->forward(at::silu(coord1_[l]->as<torch::nn::Linear>()->forward(m)))) *
                        options_.coordinate_range();
    at::Tensor radial = (d2 + 1e-12).sqrt() + 1;
    x = x + (diff / radial * weight * pair_mask).sum(2) / neighbours;
    // Features: h_i += φ_h(h_i, Σ_j m_ij) (not after the last layer: nothing reads them).
    if (l + 1 == options_.depth()) break;
    at::Tensor agg = m.sum(2);
    h = h + node2_[l]->as<torch::nn::Linear>()->forward(at::silu(node1_[l]->as<torch::nn::Linear>()->forward(at::cat({h, agg}, 2))));
    h = h * node_mask;
  }
  at::Tensor v = (x - x0) * node_mask;
  at::Tensor count = node_mask.sum(1, /*keepdim=*/true).clamp_min(1);  // (B, 1, 1)
  v = (v - v.sum(1, /*keepdim=*/true) / count) * node_mask;
  return v.reshape(x_in.sizes());
}

nlohmann::json EGNNImpl::spec() const {
  return {{"type", "egnn"},
          {"options",
           {{"particles", options_.particles()},
            {"particle_dim", options_.particle_dim()},
            {"width", options_.width()},
            {"depth", options_.depth()},
            {"attention", options_.attention()},
            {"coordinate_range", options_.coordinate_range()},
            {"time_features", options_.time_features()}}}};
}

namespace {

std::shared_ptr<VelocityModel> build_egnn(const nlohmann::json& spec) {
  const nlohmann::json options = spec.value("options", nlohmann::json::object());
  if (!options.contains("particles") || !options.contains("particle_dim")) {
    throw std::invalid_argument("model egnn needs particle data (molecules:dw4, molecules:lj13): its description " + spec.dump() +
                                " names no particles");
  }
  try {
    EGNNOptions o(options["particles"].get<int64_t>(), options["particle_dim"].get<int64_t>());
    o.width(options.value("width", o.width()))
        .depth(options.value("depth", o.depth()))
        .attention(options.value("attention", o.attention()))
        .coordinate_range(options.value("coordinate_range", o.coordinate_range()))
        .time_features(options.value("time_features", o.time_features()));
    return std::make_shared<EGNNImpl>(o);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("egnn options " + options.dump() + ": " + e.what());
  }
}

}  // namespace

ModelRegistration egnn_registration() {
  ModelRegistration r;
  r.describe = [](const std::vector<int64_t>& shape, int64_t classes, const nlohmann::json& given) {
    if (classes > 0) throw std::invalid_argument("model egnn is not class-conditional");
    nlohmann::json from_data = nlohmann::json::object();
    nlohmann::json user = given.is_object() ? given : nlohmann::json::object();
    for (const char* key : {"particles", "particle_dim"}) {
      if (user.contains(key)) from_data[key] = user[key], user.erase(key);
    }
    if (!from_data.contains("particles") || !from_data.contains("particle_dim")) {
      throw std::invalid_argument("model egnn needs particle data (molecules:dw4, molecules:lj13)");
    }
    nlohmann::json options = normalized_options("egnn", user, kEgnnUserOptions);
    options.update(from_data);
    const int64_t flat = from_data["particles"].get<int64_t>() * from_data["particle_dim"].get<int64_t>();
    if (shape.size() != 1 || shape[0] != flat) {
      throw std::invalid_argument("model egnn takes configurations of " + std::to_string(flat) + " coordinates");
    }
    return build_egnn({{"type", "egnn"}, {"options", options}})->spec();  // checks the options, fills the defaults
  };
  r.build = build_egnn;
  r.help = "E(n)-equivariant graph network for particle systems: rotations, translations and permutations commute with it "
           "(width, depth = layers, attention, coordinate-range, time-features)";
  r.options = kEgnnUserOptions;
  return r;
}

}  // namespace flowmatch::models
