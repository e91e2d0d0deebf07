#include "flowmatch/models/discrete_mlp.h"

#include <stdexcept>
#include <string>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace flowmatch::models {

DiscreteMLPImpl::DiscreteMLPImpl(DiscreteMLPOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  if (o.vocabulary() < 2 || o.input_vocabulary() < o.vocabulary() || o.input_vocabulary() > (int64_t{1} << 24)) {
    throw std::invalid_argument("discrete-mlp: vocabulary " + std::to_string(o.vocabulary()) + " and input vocabulary " +
                                std::to_string(o.input_vocabulary()) + " (expected 2 <= V <= input vocabulary <= 2^24)");
  }
  if (o.length() < 1 || o.length() > 4096 || o.embedding() < 1 || o.embedding() > 65536 ||
      o.length() * (o.embedding() + o.vocabulary()) > (int64_t{1} << 26)) {
    throw std::invalid_argument("discrete-mlp: length " + std::to_string(o.length()) + " and embedding " + std::to_string(o.embedding()) +
                                " out of range (length in [1, 4096], embedding in [1, 65536], length x (embedding + vocabulary) <= 2^26)");
  }
  const int64_t features = o.length() * o.embedding();
  embedding_ = register_module("embedding", torch::nn::Embedding(o.input_vocabulary(), o.embedding()));
  mlp_ = register_module("mlp", std::make_shared<MLPImpl>(MLPOptions(o.mlp()).dim(features)));
  head_ = register_module("head", torch::nn::Linear(features, o.length() * o.vocabulary()));
}

at::Tensor DiscreteMLPImpl::forward(const at::Tensor& x, const at::Tensor& t) {
  const auto& o = options_;
  TORCH_CHECK(x.dim() == 2 && x.size(1) == o.length(), "discrete-mlp: tokens must be (B, ", o.length(), "), got ", x.sizes());
  at::Tensor ids = x.scalar_type() == at::kLong ? x : x.round().to(at::kLong);
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < o.input_vocabulary(), "discrete-mlp: token ids must be in [0, ", o.input_vocabulary(), "), got [", lo,
                ", ", hi, "]");
  }
  at::Tensor h = embedding_->forward(ids).reshape({x.size(0), -1});
  h = mlp_->forward(h, t);
  return head_->forward(h).reshape({x.size(0), o.length(), o.vocabulary()});
}

nlohmann::json DiscreteMLPImpl::spec() const {
  nlohmann::json mlp = to_json(mlp_->options);
  mlp.erase("dim");
  mlp["vocabulary"] = options_.vocabulary();
  mlp["input_vocabulary"] = options_.input_vocabulary();
  mlp["length"] = options_.length();
  mlp["embedding"] = options_.embedding();
  return {{"type", "discrete-mlp"}, {"options", mlp}};
}

namespace {

std::shared_ptr<VelocityModel> build_discrete_mlp(const nlohmann::json& spec) {
  nlohmann::json options = spec.value("options", nlohmann::json::object());
  for (const char* key : {"vocabulary", "input_vocabulary", "length"}) {
    if (!options.contains(key) || !options[key].is_number_integer()) {
      throw std::invalid_argument(std::string("discrete-mlp description needs an integer \"") + key + "\", got " + spec.dump());
    }
  }
  DiscreteMLPOptions o(options["vocabulary"].get<int64_t>(), options["length"].get<int64_t>());
  o.input_vocabulary(options["input_vocabulary"].get<int64_t>());
  o.embedding(options.value("embedding", o.embedding()));
  for (const char* key : {"vocabulary", "input_vocabulary", "length", "embedding"}) options.erase(key);
  options["dim"] = o.length() * o.embedding();
  o.mlp(mlp_options_from_json(options));
  return std::make_shared<DiscreteMLPImpl>(o);
}

}  // namespace

ModelRegistration discrete_mlp_registration() {
  const std::vector<std::string> keys = {"width", "depth", "activation", "time_encoding", "time_features", "embedding"};
  ModelRegistration r;
  r.describe = [keys](const std::vector<int64_t>& shape, int64_t classes, const nlohmann::json& given) {
    if (classes > 0) throw std::invalid_argument("model discrete-mlp is not class-conditional");
    nlohmann::json options = given.is_object() ? given : nlohmann::json::object();
    if (!options.contains("vocabulary")) throw std::invalid_argument("model discrete-mlp needs token data (e.g. --data checkerboard-discrete)");
    if (shape.size() != 1) throw std::invalid_argument("model discrete-mlp takes sequences of tokens (one dimension)");
    const DiscreteMLPOptions defaults(2, 1);
    nlohmann::json mlp_given = options;
    for (const char* key : {"vocabulary", "input_vocabulary", "embedding"}) mlp_given.erase(key);
    if (!mlp_given.contains("width")) mlp_given["width"] = defaults.mlp().width();
    if (!mlp_given.contains("activation")) mlp_given["activation"] = to_string(defaults.mlp().activation());
    const int64_t embedding = options.value("embedding", defaults.embedding());
    // The MLP's own description checks its options.
    nlohmann::json mlp = model_registration("mlp").describe({shape[0] * embedding}, 0, mlp_given);
    nlohmann::json out = mlp["options"];
    out.erase("dim");
    out["vocabulary"] = options["vocabulary"];
    out["input_vocabulary"] = options.value("input_vocabulary", options["vocabulary"]);
    out["length"] = shape[0];
    out["embedding"] = embedding;
    nlohmann::json spec = {{"type", "discrete-mlp"}, {"options", out}};
    try {
      build_discrete_mlp(spec);  // checks the sizes
    } catch (const c10::Error& e) {
      throw std::invalid_argument(std::string("model discrete-mlp: ") + e.what_without_backtrace());
    }
    return spec;
  };
  r.build = build_discrete_mlp;
  r.help = "posterior network for short token sequences (embeddings, MLP, logits per token; width, depth, embedding, activation, time-encoding)";
  r.options = keys;
  return r;
}

}  // namespace flowmatch::models
