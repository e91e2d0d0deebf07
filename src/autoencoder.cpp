#include "flowmatch/autoencoder.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <stdexcept>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include "flowmatch/checkpoint.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/models/velocity_model.h"
#include "flowmatch/run.h"
#include "flowmatch/training_state.h"

namespace flowmatch {

namespace fs = std::filesystem;
using json = nlohmann::json;

json to_json(const AutoencoderOptions& o) {
  return {{"in_channels", o.in_channels()},         {"height", o.height()},     {"width", o.width()},
          {"latent_channels", o.latent_channels()}, {"channels", o.channels()}, {"kl_weight", o.kl_weight()}};
}

AutoencoderOptions autoencoder_options_from_json(const json& j) {
  try {
    AutoencoderOptions o(j.at("in_channels").get<int64_t>(), j.at("height").get<int64_t>(), j.at("width").get<int64_t>());
    o.latent_channels(j.at("latent_channels").get<int64_t>()).channels(j.at("channels").get<int64_t>()).kl_weight(j.at("kl_weight").get<double>());
    return o;
  } catch (const json::exception& e) {
    throw std::invalid_argument("autoencoder options " + j.dump() + ": " + e.what());
  }
}

at::Tensor LatentPosterior::kl() const {
  const at::Tensor var = std.square();
  return (0.5 * (mean.square() + var - 1 - var.log())).flatten(1).sum(1);
}

namespace {

torch::nn::Conv2d autoencoder_conv3x3(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}

// GroupNorm → SiLU → conv 3×3, twice, plus the input.
class ResidualBlockImpl : public torch::nn::Module {
 public:
  explicit ResidualBlockImpl(int64_t c) {
    norm1_ = register_module("norm1", torch::nn::GroupNorm(torch::nn::GroupNormOptions(8, c)));
    conv1_ = register_module("conv1", autoencoder_conv3x3(c, c));
    norm2_ = register_module("norm2", torch::nn::GroupNorm(torch::nn::GroupNormOptions(8, c)));
    conv2_ = register_module("conv2", autoencoder_conv3x3(c, c));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = conv1_->forward(at::silu(norm1_->forward(x)));
    return x + conv2_->forward(at::silu(norm2_->forward(h)));
  }

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
};
TORCH_MODULE(ResidualBlock);

void validate(const AutoencoderOptions& o) {
  auto check = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument("autoencoder: " + what);
  };
  check(o.in_channels() >= 1 && o.in_channels() <= 64, "in_channels must be in [1, 64], got " + std::to_string(o.in_channels()));
  for (int64_t side : {o.height(), o.width()}) {
    check(side >= 4 && side <= 4096 && side % 4 == 0,
          "image sides must be multiples of 4 in [4, 4096] (two stride-2 stages), got " + std::to_string(o.height()) + "x" + std::to_string(o.width()));
  }
  check(o.latent_channels() >= 1 && o.latent_channels() <= 64, "--latent-channels must be in [1, 64], got " + std::to_string(o.latent_channels()));
  check(o.channels() >= 8 && o.channels() <= 1024 && o.channels() % 8 == 0,
        "--channels must be a multiple of 8 in [8, 1024] (GroupNorm of 8 groups), got " + std::to_string(o.channels()));
  check(o.kl_weight() >= 0 && std::isfinite(o.kl_weight()), "--kl-weight must be finite and >= 0, got " + std::to_string(o.kl_weight()));
}

}  // namespace

AutoencoderImpl::AutoencoderImpl(AutoencoderOptions options_) : options(std::move(options_)) {
  validate(options);
  const int64_t c = options.channels(), wide = 2 * c, latent = options.latent_channels();
  const int64_t moments = options.kl_weight() > 0 ? 2 * latent : latent;
  encoder_ = register_module("encoder", torch::nn::Sequential(autoencoder_conv3x3(options.in_channels(), c), torch::nn::SiLU(), autoencoder_conv3x3(c, wide, 2),
                                                              ResidualBlock(wide), autoencoder_conv3x3(wide, wide, 2), ResidualBlock(wide),
                                                              torch::nn::GroupNorm(torch::nn::GroupNormOptions(8, wide)), torch::nn::SiLU(),
                                                              autoencoder_conv3x3(wide, moments)));
  auto up = [](int64_t in, int64_t out) { return torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(in, out, 2).stride(2)); };
  decoder_ = register_module("decoder", torch::nn::Sequential(autoencoder_conv3x3(latent, wide), ResidualBlock(wide), up(wide, wide), ResidualBlock(wide),
                                                              up(wide, c), ResidualBlock(c),
                                                              torch::nn::GroupNorm(torch::nn::GroupNormOptions(8, c)), torch::nn::SiLU(),
                                                              autoencoder_conv3x3(c, options.in_channels())));
}

std::vector<int64_t> AutoencoderImpl::latent_shape() const {
  return {options.latent_channels(), options.height() / 4, options.width() / 4};
}

LatentPosterior AutoencoderImpl::encode(const at::Tensor& images) {
  const int64_t pixels = options.in_channels() * options.height() * options.width();
  TORCH_CHECK(images.dim() >= 2 && images.numel() == images.size(0) * pixels, "autoencoder: images of ", options.in_channels(), "x",
              options.height(), "x", options.width(), " expected, got ", images.sizes());
  at::Tensor h = encoder_->forward(images.reshape({images.size(0), options.in_channels(), options.height(), options.width()}));
  LatentPosterior q;
  if (options.kl_weight() > 0) {
    auto parts = h.chunk(2, 1);
    q.mean = parts[0];
    q.std = at::exp(0.5 * parts[1].clamp(-30, 20));
  } else {
    q.mean = h;
    q.std = at::zeros_like(h);
  }
  return q;
}

at::Tensor AutoencoderImpl::decode(const at::Tensor& latents) {
  const auto shape = latent_shape();
  TORCH_CHECK(latents.dim() >= 2 && latents.numel() == latents.size(0) * shape[0] * shape[1] * shape[2], "autoencoder: latents of ", shape[0],
              "x", shape[1], "x", shape[2], " expected, got ", latents.sizes());
  return decoder_->forward(latents.reshape({latents.size(0), shape[0], shape[1], shape[2]}));
}

bool train_autoencoder(AutoencoderImpl& autoencoder, const data::ImageDataset& data, const AutoencoderTrainingOptions& o,
                       const std::function<void(const AutoencoderProgress&)>& progress, const std::function<bool()>& should_stop) {
  if (o.steps() < 1 || o.batch_size() < 1 || !(o.lr() > 0)) {
    throw std::invalid_argument("autoencoder training needs steps >= 1, batch size >= 1 and lr > 0");
  }
  const auto& a = autoencoder.options;
  if (data.images.size(0) < 1 || data.channels() != a.in_channels() || data.height() != a.height() || data.width() != a.width()) {
    throw std::invalid_argument("the autoencoder expects " + std::to_string(a.in_channels()) + "x" + std::to_string(a.height()) + "x" +
                                std::to_string(a.width()) + " images, the data are " + c10::str(data.images.sizes()));
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed());
  torch::optim::AdamW optimizer(autoencoder.parameters(), torch::optim::AdamWOptions(o.lr()).weight_decay(1e-4));
  const auto device = autoencoder.parameters().front().device();
  const double pixels = static_cast<double>(data.pixels_per_image());
  const std::vector<at::Tensor> parameters = autoencoder.parameters();
  // What a stored state must have been made with: the architecture and every training option that
  // shapes the trajectory (the step count sets the learning-rate schedule).
  const nlohmann::json made_with = {{"model", to_json(a)}, {"steps", o.steps()}, {"batch", o.batch_size()}, {"lr", o.lr()}, {"seed", o.seed()}};
  int64_t first = 0;
  if (!o.state_file().empty() && fs::exists(o.state_file())) {
    const std::string& path = o.state_file();
    const CheckpointContents in = read_checkpoint(path);
    if (in.meta.value("kind", std::string()) != "autoencoder_training_state" || !in.meta.contains("made_with") ||
        !in.meta.contains("step") || !in.meta["step"].is_number_integer()) {
      throw std::runtime_error("'" + path + "' is not an autoencoder's training state");
    }
    if (in.meta["made_with"] != made_with) {
      throw std::invalid_argument("'" + path + "' was made by another training (" + in.meta["made_with"].dump() + "), not this one (" +
                                  made_with.dump() + ")");
    }
    first = in.meta["step"].get<int64_t>();
    if (first < 0 || first > o.steps()) throw std::runtime_error("'" + path + "': step " + std::to_string(first) + " is outside the training");
    load_module(autoencoder, "model/", in, path);
    load_optimizer_state(optimizer, parameters, in, path);
    load_generator_state(gen, "generator", in, path);
  }
  auto save_state = [&](int64_t step) {
    CheckpointContents out;
    out.meta = {{"kind", "autoencoder_training_state"}, {"made_with", made_with}, {"step", step}};
    save_module(autoencoder, "model/", out);
    save_optimizer_state(optimizer, parameters, out);
    save_generator_state(gen, "generator", out);
    write_checkpoint(o.state_file(), out);
  };
  autoencoder.train();
  double mse_sum = 0, kl_sum = 0;
  int64_t count = 0, images = 0;
  auto last = std::chrono::steady_clock::now();
  for (int64_t step = first; step < o.steps(); ++step) {
    const double lr = o.lr() * 0.5 * (1 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(o.steps())));
    for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
    at::Tensor index = at::randint(data.images.size(0), {o.batch_size()}, gen, at::TensorOptions().dtype(at::kLong));
    at::Tensor x = data::pixels_to_unit_range(data.images.index_select(0, index), gen).to(device);
    LatentPosterior q = autoencoder.encode(x);
    at::Tensor z = a.kl_weight() > 0 ? q.mean + q.std * at::randn(q.mean.sizes(), gen).to(device) : q.mean;
    at::Tensor squared_error = (autoencoder.decode(z) - x).square().flatten(1).sum(1);
    at::Tensor kl = a.kl_weight() > 0 ? q.kl() : at::zeros({x.size(0)}, x.options());
    // Per image: summed squared error + kl_weight · KL; divided by the pixels (Adam does not see the scale).
    at::Tensor loss = (squared_error + a.kl_weight() * kl).mean() / pixels;
    optimizer.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(autoencoder.parameters(), 1.0);
    optimizer.step();
    mse_sum += squared_error.mean().item<double>() / pixels;
    kl_sum += kl.mean().item<double>();
    ++count;
    images += o.batch_size();
    const bool end = step + 1 == o.steps();
    if (progress && ((step + 1) % 50 == 0 || end)) {
      const auto now = std::chrono::steady_clock::now();
      const double dt = std::chrono::duration<double>(now - last).count();
      progress({step + 1, o.steps(), mse_sum / static_cast<double>(count), kl_sum / static_cast<double>(count),
                dt > 0 ? static_cast<double>(images) / dt : 0});
      last = now;
      mse_sum = kl_sum = 0;
      count = images = 0;
    }
    const bool stop = should_stop && should_stop();
    if (!o.state_file().empty() && (stop || (!end && (step + 1) % std::max<int64_t>(1, o.state_every()) == 0))) save_state(step + 1);
    if (stop) {
      autoencoder.eval();
      return false;
    }
  }
  autoencoder.eval();
  return true;
}

LatentPosterior encode_images(AutoencoderImpl& autoencoder, const at::Tensor& images, int64_t batch_size) {
  c10::InferenceMode guard;
  autoencoder.eval();
  const auto device = autoencoder.parameters().front().device();
  std::vector<at::Tensor> means, stds;
  for (int64_t start = 0; start < images.size(0); start += batch_size) {
    const int64_t b = std::min(batch_size, images.size(0) - start);
    LatentPosterior q = autoencoder.encode(data::pixels_to_unit_range(images.narrow(0, start, b)).to(device));
    means.push_back(q.mean.to(at::kCPU));
    stds.push_back(q.std.to(at::kCPU));
  }
  return {at::cat(means), at::cat(stds)};
}

namespace {

// `rows` of `x` in batches of 500 through `f` (on the network's device), flattened, concatenated on the CPU.
at::Tensor in_batches(const at::Tensor& x, const c10::Device& device, const std::function<at::Tensor(const at::Tensor&)>& f) {
  c10::InferenceMode guard;
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < x.size(0); start += 500) {
    const int64_t b = std::min<int64_t>(500, x.size(0) - start);
    parts.push_back(f(x.narrow(0, start, b).to(device, at::kFloat)).reshape({b, -1}).to(at::kCPU));
  }
  return at::cat(parts);
}

}  // namespace

at::Tensor LatentAutoencoder::encode(const at::Tensor& images) const {
  return in_batches(images, network->parameters().front().device(),
                    [&](const at::Tensor& x) { return (network->encode(x).mean - shift) * scale; });
}

at::Tensor LatentAutoencoder::decode(const at::Tensor& latents) const {
  return in_batches(latents, network->parameters().front().device(), [&](const at::Tensor& z) { return network->decode(z / scale + shift); });
}

json describe_autoencoder(const std::string& dir) {
  const fs::path config_path = fs::path(dir) / "config.json";
  json config;
  try {
    if (!fs::exists(config_path) || !fs::exists(fs::path(dir) / "autoencoder.ckpt")) throw std::invalid_argument("missing");
    config = json::parse(io::read_file(config_path.string()));
    if (config.value("kind", std::string()) != "autoencoder") throw std::invalid_argument("kind");
  } catch (const std::exception&) {
    throw std::invalid_argument("--autoencoder '" + dir + "' holds no autoencoder (config.json and autoencoder.ckpt of kind autoencoder): train one with "
                                "'flowmatch autoencoder train --out " + dir + "'");
  }
  try {
    const AutoencoderOptions o = autoencoder_options_from_json(config.at("model"));
    return {{"dir", fs::absolute(dir).lexically_normal().string()},
            {"id", config.at("id").get<std::string>()},
            {"image_shape", {o.in_channels(), o.height(), o.width()}},
            {"latent_shape", {o.latent_channels(), o.height() / 4, o.width() / 4}},
            {"shift", config.at("latent_shift").get<double>()},
            {"scale", config.at("latent_scale").get<double>()},
            {"kl_weight", o.kl_weight()},
            {"data", config.at("data")}};
  } catch (const std::exception& e) {
    throw std::invalid_argument("--autoencoder '" + dir + "': config.json: " + e.what());
  }
}

LatentAutoencoder load_latent_autoencoder(const json& description, const c10::Device& device) {
  const std::string dir = description.at("dir").get<std::string>(), id = description.at("id").get<std::string>();
  const std::string file = (fs::path(dir) / "autoencoder.ckpt").string();
  if (!fs::exists(file)) {
    throw std::runtime_error("this run's flow lives in the latent space of the autoencoder '" + dir +
                             "', which is missing (its decoder turns the flow's samples into images): put that folder back");
  }
  CheckpointContents contents = read_checkpoint(file);
  if (contents.meta.value("kind", std::string()) != "autoencoder") {
    throw std::runtime_error("'" + file + "' is not an autoencoder (flowmatch autoencoder train writes one)");
  }
  if (contents.meta.value("id", std::string()) != id) {
    throw std::runtime_error("'" + dir + "' holds another autoencoder (id " + contents.meta.value("id", std::string("none")) +
                             ") than the one this run was trained with (id " + id + "): its latents would decode to noise");
  }
  LatentAutoencoder ae;
  try {
    ae.network = std::make_shared<AutoencoderImpl>(autoencoder_options_from_json(contents.meta.at("options")));
  } catch (const std::exception& e) {
    throw std::runtime_error("'" + file + "': " + e.what());
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& item : ae.network->named_parameters(true)) {
      auto found = contents.tensors.find("param/" + item.key());
      if (found == contents.tensors.end() || !found->second.sizes().equals(item.value().sizes())) {
        throw std::runtime_error("'" + file + "': parameter " + item.key() + " is missing or has another shape");
      }
      item.value().copy_(found->second);
    }
  }
  ae.network->to(device);
  ae.network->eval();
  ae.shift = description.at("shift").get<double>();
  ae.scale = description.at("scale").get<double>();
  ae.dir = dir;
  ae.id = id;
  return ae;
}

LatentPosterior stored_training_latents(const std::string& dir, int64_t images) {
  const std::string file = (fs::path(dir) / "latents-train.ckpt").string();
  if (!fs::exists(file)) return {};
  CheckpointContents contents = read_checkpoint(file);
  auto mean = contents.tensors.find("mean"), std = contents.tensors.find("std");
  if (mean == contents.tensors.end() || std == contents.tensors.end() || mean->second.size(0) != images) return {};
  return {mean->second.to(at::kFloat), std->second.to(at::kFloat)};
}

json train_autoencoder_run(const std::string& out, const AutoencoderRunOptions& f, const std::function<void(const std::string&)>& started,
                           const std::function<void(const AutoencoderProgress&)>& progress, const std::function<bool()>& should_stop) {
  // The state of an unfinished training lives in OUT until the end (the one file there until then).
  const std::string state_file = out + "/training-state.ckpt";
  if (f.resume) {
    if (fs::exists(out + "/autoencoder.ckpt")) throw std::invalid_argument("--resume: '" + out + "' holds a finished autoencoder");
    if (!fs::exists(state_file)) {
      throw std::invalid_argument("--resume: '" + out + "' holds no training state (training-state.ckpt, kept when a training is stopped)");
    }
  }
  // An image folder has no held-out split: the reconstruction error below is then on the training images.
  const data::ImageSplits splits = data::image_splits(f.data, f.data_dir, f.image_channels);
  const data::ImageDataset &train = splits.train, &test = splits.test;
  json data_spec = {{"target", splits.target}, {splits.held_out ? "data_dir" : "folder", splits.location}};
  data_spec["image_shape"] = {train.channels(), train.height(), train.width()};
  data_spec["train_images"] = train.images.size(0);
  at::manual_seed(f.seed);
  const auto options = AutoencoderOptions(train.channels(), train.height(), train.width())
                           .latent_channels(f.latent_channels)
                           .channels(f.channels)
                           .kl_weight(f.kl_weight);
  Autoencoder autoencoder(options);
  autoencoder->to(f.device);
  const auto latent = autoencoder->latent_shape();
  if (started) {
    started("training an autoencoder on " + std::to_string(train.images.size(0)) + " images of " + c10::str(train.images.sizes().slice(1)) +
            " to latents of " + std::to_string(latent[0]) + "x" + std::to_string(latent[1]) + "x" + std::to_string(latent[2]) + ", " +
            std::to_string(models::parameter_count(*autoencoder)) + " parameters, " + std::to_string(at::get_num_threads()) + " thread(s), " +
            std::to_string(f.steps) + " steps of batch " + std::to_string(f.batch));
  }
  fs::create_directories(out);
  if (!f.resume) fs::remove(state_file);  // a fresh training, as asked
  const auto start = std::chrono::steady_clock::now();
  const auto training = AutoencoderTrainingOptions().steps(f.steps).batch_size(f.batch).lr(f.lr).seed(f.seed).state_file(state_file);
  if (!train_autoencoder(*autoencoder, train, training, progress, should_stop)) return nullptr;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // The training set's posterior and SD3's normalisation: one shift (the mean) and one scale (1 / std of z
  // = mean + std·ε, whose variance is Var(mean) + E[std²]).
  const LatentPosterior q = encode_images(*autoencoder, train.images);
  const double shift = q.mean.to(at::kDouble).mean().item<double>();
  const double variance = q.mean.to(at::kDouble).var(/*unbiased=*/false).item<double>() + q.std.to(at::kDouble).square().mean().item<double>();
  if (!(variance > 0) || !std::isfinite(variance)) throw std::runtime_error("autoencoder training diverged: the latents' variance is " + std::to_string(variance));
  const double scale = 1.0 / std::sqrt(variance);

  // Reconstructions of the test images (pixels at the centre of their bins).
  const at::Tensor reconstructed = in_batches(encode_images(*autoencoder, test.images).mean, f.device,
                                             [&](const at::Tensor& z) { return autoencoder->decode(z); })
                                      .reshape(test.images.sizes());
  const at::Tensor truth = data::pixels_to_unit_range(test.images);
  const double mse = (reconstructed - truth).square().mean().item<double>();
  std::random_device entropy;
  char id[24];
  std::snprintf(id, sizeof id, "%08x%08x", entropy(), entropy());
  json metrics = {{"test_reconstruction_mse", mse},
                  {"test_psnr_db", 10 * std::log10(4.0 / mse)},  // [−1, 1]: peak-to-peak 2
                  {"test_images", test.images.size(0)},
                  {"held_out", splits.held_out},
                  {"latent_shift", shift},
                  {"latent_scale", scale},
                  {"latent_posterior_std", q.std.mean().item<double>()},
                  {"train_seconds", seconds},
                  {"train_images_per_s", static_cast<double>(f.steps * f.batch) / seconds},
                  {"parameters", models::parameter_count(*autoencoder)}};
  json config = {{"flowmatch_version", FLOWMATCH_VERSION},
                 {"kind", "autoencoder"},
                 {"id", id},
                 {"data", data_spec},
                 {"model", to_json(options)},
                 {"latent_shape", latent},
                 {"latent_shift", shift},
                 {"latent_scale", scale},
                 {"training", {{"steps", f.steps}, {"batch", f.batch}, {"lr", f.lr}, {"seed", f.seed}}}};
  CheckpointContents weights;
  weights.meta = {{"kind", "autoencoder"}, {"id", id}, {"options", to_json(options)}};
  for (const auto& item : autoencoder->named_parameters(true)) weights.tensors["param/" + item.key()] = item.value().detach().to(at::kCPU);
  CheckpointContents latents;
  latents.meta = {{"kind", "autoencoder_training_latents"}, {"id", id}, {"data", data_spec}};
  latents.tensors["mean"] = q.mean;
  latents.tensors["std"] = q.std.to(at::kHalf);
  const int64_t shown = std::min<int64_t>(16, test.images.size(0));
  at::Tensor grid = at::cat({test.images.narrow(0, 0, shown), data::unit_range_to_pixels(reconstructed.narrow(0, 0, shown))});
  char title[96];
  std::snprintf(title, sizeof title, "test images above their reconstructions (PSNR %.1f dB)", 10 * std::log10(4.0 / mse));
  // The weights last: a folder without autoencoder.ckpt is no autoencoder (describe_autoencoder).
  write_checkpoint(out + "/latents-train.ckpt", latents);
  io::write_image_grid_png(out + "/reconstructions.png", grid, shown, 3, {"images", "decoded"}, title);
  write_json_file(out + "/metrics.json", metrics);
  write_json_file(out + "/config.json", config);
  write_checkpoint(out + "/autoencoder.ckpt", weights);
  fs::remove(state_file);
  return metrics;
}

}  // namespace flowmatch
