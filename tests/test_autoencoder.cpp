// The image autoencoder of latent runs: shapes, the KL term's closed form, training reduces the
// reconstruction error far below the data's variance, the latent normalisation, and a latent run
// (images domain with an autoencoder) that trains on normalised latents and decodes its samples.

#include <cmath>
#include <filesystem>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stb_image_write.h>

#include "flowmatch/autoencoder.h"
#include "flowmatch/checkpoint.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/run.h"
#include "test_util.h"

namespace fm = flowmatch;
namespace fs = std::filesystem;

namespace {

// 8×12 grey images of two bright vertical bars (positions and brightness vary): a family with four
// parameters, which a 4×2×3 latent (24 numbers) can hold.
fm::data::ImageDataset bar_images(int64_t n, uint64_t seed) {
  auto gen = fmtest::generator(seed);
  at::Tensor images = at::zeros({n, 1, 8, 12}, at::kByte);
  at::Tensor col = at::randint(0, 12, {n, 2}, gen, at::TensorOptions().dtype(at::kLong));
  at::Tensor level = at::randint(120, 256, {n, 2}, gen, at::TensorOptions().dtype(at::kLong));
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < 2; ++k) images[i].select(2, col[i][k].item<int64_t>()).fill_(level[i][k].item<int64_t>());
  }
  return {images, at::remainder(at::arange(n, at::kLong), 2), {"even", "odd"}};
}

// The same images as a folder DIR/{even,odd}/*.png.
void write_folder(const fm::data::ImageDataset& set, const std::string& dir) {
  for (int64_t i = 0; i < set.images.size(0); ++i) {
    const std::string folder = dir + "/" + set.class_names[set.labels[i].item<int64_t>()];
    fs::create_directories(folder);
    at::Tensor pixels = set.images[i][0].contiguous();
    const int h = static_cast<int>(pixels.size(0)), w = static_cast<int>(pixels.size(1));
    char name[32];
    std::snprintf(name, sizeof name, "/%03d.png", static_cast<int>(i));
    stbi_write_png((folder + name).c_str(), w, h, 1, pixels.data_ptr<uint8_t>(), w);
  }
}

// A small autoencoder run on `set`, written as the folder DIR/bars.
fm::AutoencoderRunOptions bars_run(const fm::data::ImageDataset& set, const std::string& dir, int64_t steps) {
  write_folder(set, dir + "/bars");
  fm::AutoencoderRunOptions o;
  o.data = dir + "/bars";
  o.channels = 8;
  o.steps = steps;
  o.batch = 8;
  return o;
}

}  // namespace

TEST(Autoencoder, ShapesOfEncoderDecoderAndPosterior) {
  at::manual_seed(0);
  fm::Autoencoder ae(fm::AutoencoderOptions(1, 28, 28).channels(8));
  EXPECT_EQ(ae->latent_shape(), (std::vector<int64_t>{4, 7, 7}));
  at::Tensor x = at::rand({3, 784}) * 2 - 1;  // flattened images are accepted
  fm::LatentPosterior q = ae->encode(x);
  EXPECT_EQ(q.mean.sizes(), (std::vector<int64_t>{3, 4, 7, 7}));
  EXPECT_EQ(q.std.sizes(), q.mean.sizes());
  EXPECT_TRUE((q.std > 0).all().item<bool>());
  EXPECT_EQ(ae->decode(q.mean).sizes(), (std::vector<int64_t>{3, 1, 28, 28}));
  EXPECT_EQ(ae->decode(q.mean.reshape({3, -1})).sizes(), (std::vector<int64_t>{3, 1, 28, 28}));
  // Non-square RGB images: H/4 × W/4 latents of the chosen channels.
  fm::Autoencoder rgb(fm::AutoencoderOptions(3, 8, 12).channels(16).latent_channels(2));
  EXPECT_EQ(rgb->encode(at::zeros({2, 3, 8, 12})).mean.sizes(), (std::vector<int64_t>{2, 2, 2, 3}));
  EXPECT_EQ(rgb->decode(at::zeros({2, 12})).sizes(), (std::vector<int64_t>{2, 3, 8, 12}));
  // Without a KL weight the encoder is deterministic: no log-variance channels, std exactly 0.
  fm::Autoencoder plain(fm::AutoencoderOptions(1, 8, 8).channels(8).kl_weight(0));
  EXPECT_TRUE(plain->encode(at::zeros({2, 64})).std.eq(0).all().item<bool>());
  EXPECT_EQ(fm::models::parameter_count(*ae) - fm::models::parameter_count(*fm::Autoencoder(fm::AutoencoderOptions(1, 28, 28).channels(8).kl_weight(0))),
            4 * 16 * 9 + 4);  // the last convolution's log-variance half: 4 outputs × 16 inputs × 3×3, + 4 biases
}

TEST(Autoencoder, BadOptionsAreNamed) {
  auto message = [](const fm::AutoencoderOptions& o) {
    try {
      fm::Autoencoder ae(o);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(fm::AutoencoderOptions(1, 30, 28)).find("multiples of 4"), std::string::npos);
  EXPECT_NE(message(fm::AutoencoderOptions(1, 28, 28).channels(12)).find("--channels must be a multiple of 8"), std::string::npos);
  EXPECT_NE(message(fm::AutoencoderOptions(1, 28, 28).kl_weight(-1)).find("--kl-weight"), std::string::npos);
  EXPECT_NE(message(fm::AutoencoderOptions(1, 28, 28).latent_channels(0)).find("--latent-channels"), std::string::npos);
}

TEST(Autoencoder, KLIsTheClosedFormAndItsMonteCarloEstimate) {
  auto gen = fmtest::generator(3);
  fm::LatentPosterior q{at::randn({2, 3, 2, 2}, gen, at::kDouble), at::rand({2, 3, 2, 2}, gen, at::kDouble) + 0.3};
  // Per element: ½(μ² + σ² − 1 − log σ²), summed per image.
  at::Tensor expected = (0.5 * (q.mean.square() + q.std.square() - 1 - 2 * q.std.log())).flatten(1).sum(1);
  EXPECT_TRUE(fmtest::AllClose(q.kl(), expected, 1e-12, 1e-12));
  // E_q[log q(z) − log N(z; 0, I)] by sampling, within 5 standard errors.
  const int64_t m = 200000;
  at::Tensor mu = q.mean[0].flatten(), sd = q.std[0].flatten();
  at::Tensor eps = at::randn({m, mu.size(0)}, gen, at::kDouble);
  at::Tensor z = mu + sd * eps;
  at::Tensor log_ratio = (-0.5 * eps.square() - sd.log() + 0.5 * z.square()).sum(1);
  const double estimate = log_ratio.mean().item<double>(), stderr_ = log_ratio.std().item<double>() / std::sqrt(double(m));
  EXPECT_NEAR(estimate, q.kl()[0].item<double>(), 5 * stderr_);
  // The prior itself has KL 0.
  fm::LatentPosterior prior{at::zeros({1, 4}, at::kDouble), at::ones({1, 4}, at::kDouble)};
  EXPECT_DOUBLE_EQ(prior.kl().item<double>(), 0.0);
}

TEST(Autoencoder, TrainingReconstructsFarBelowTheDataVariance) {
  at::manual_seed(1);
  const auto set = bar_images(64, 1);
  fm::Autoencoder ae(fm::AutoencoderOptions(1, 8, 12).channels(16));
  std::vector<double> mse;
  ASSERT_TRUE(fm::train_autoencoder(*ae, set, fm::AutoencoderTrainingOptions().steps(400).batch_size(16).lr(3e-3).seed(1),
                                    [&](const fm::AutoencoderProgress& p) { mse.push_back(p.reconstruction_mse); }));
  ASSERT_EQ(mse.size(), 8u);  // every 50 steps
  // The round trip on the images at their bin centres: the best constant image (the mean) has the
  // data's per-pixel variance as its error; the autoencoder must explain at least 90 % of it.
  at::Tensor x = fm::data::pixels_to_unit_range(set.images);
  const double variance = (x - x.mean(0, true)).square().mean().item<double>();
  fm::LatentPosterior q = fm::encode_images(*ae, set.images);
  at::Tensor back;
  {
    c10::InferenceMode guard;
    back = ae->decode(q.mean);
  }
  const double error = (back - x).square().mean().item<double>();
  EXPECT_LT(error, 0.1 * variance) << "variance " << variance;
  EXPECT_LT(mse.back(), 0.25 * mse.front());
}

TEST(Autoencoder, NormalisedLatentsRoundTripAndStandardise) {
  at::manual_seed(2);
  fm::LatentAutoencoder ae;
  ae.network = std::make_shared<fm::AutoencoderImpl>(fm::AutoencoderOptions(1, 8, 12).channels(8));
  ae.shift = 0.3, ae.scale = 2.5;
  at::Tensor x = at::rand({5, 96}) * 2 - 1;
  // encode gives (mean − shift)·scale flattened; decode undoes the normalisation before the decoder.
  at::Tensor z = ae.encode(x);
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{5, 24}));
  c10::InferenceMode guard;
  at::Tensor mean = ae.network->encode(x).mean;
  EXPECT_TRUE(fmtest::AllClose(z, ((mean - 0.3) * 2.5).reshape({5, -1}), 1e-6, 1e-6));
  EXPECT_TRUE(fmtest::AllClose(ae.decode(z), ae.network->decode(mean).reshape({5, -1}), 1e-5, 1e-5));
}

TEST(Autoencoder, RunFolderLatentRunAndItsErrors) {
  fmtest::TempDir dir;
  const auto set = bar_images(24, 4);
  fm::AutoencoderRunOptions o = bars_run(set, dir.str(), 30);
  const nlohmann::json metrics = fm::train_autoencoder_run(dir / "ae", o);
  for (const char* f : {"autoencoder.ckpt", "config.json", "metrics.json", "latents-train.ckpt", "reconstructions.png"}) {
    EXPECT_TRUE(fs::exists(dir / (std::string("ae/") + f))) << f;
  }
  const nlohmann::json ae = fm::describe_autoencoder(dir / "ae");
  EXPECT_EQ(ae["latent_shape"], (std::vector<int64_t>{4, 2, 3}));
  EXPECT_EQ(ae["shift"], metrics["latent_shift"]);
  // SD3's normalisation: z' = (mean + std·ε − shift)·scale has mean 0 and variance 1 over the training set
  // (Var = Var(mean) + E[std²]; std is stored as float16).
  const fm::LatentPosterior q = fm::stored_training_latents(dir / "ae", 24);
  ASSERT_TRUE(q.mean.defined());
  const double shift = ae["shift"], scale = ae["scale"];
  at::Tensor m = (q.mean.to(at::kDouble) - shift) * scale, s = q.std.to(at::kDouble) * scale;
  EXPECT_NEAR(m.mean().item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(m.var(false).item<double>() + s.square().mean().item<double>(), 1.0, 2e-3);
  // The stored latents are the images' posterior means (the folder is read in sorted order).
  const auto loaded = fm::load_latent_autoencoder(ae);
  EXPECT_TRUE(fmtest::AllClose(fm::encode_images(*loaded.network, fm::data::load_image_folder(dir / "bars").images).mean, q.mean, 1e-5, 1e-5));
  EXPECT_FALSE(fm::stored_training_latents(dir / "ae", 25).mean.defined());  // other images: encoded afresh

  // A latent run: the flow trains on normalised latents and its samples are decoded images.
  fm::Run run = fm::Run::prepare(dir / "run", {{"data", dir / "bars"}, {"autoencoder", dir / "ae"}, {"model", "dit"}, {"width", 16},
                                               {"depth", 1}, {"heads", 2}, {"steps", 2}, {"batch", 8}, {"lr", 1e-12}, {"warmup", 0}});
  EXPECT_EQ(run.config()["model"]["options"]["patch"], 1);  // 2×3 latents: patch 1
  auto problem = run.problem();
  auto gen = fmtest::generator(5);
  at::Tensor draws = problem.labeled_target(20000, gen).x.to(at::kDouble);
  EXPECT_EQ(draws.size(1), 24);
  EXPECT_NEAR(draws.mean().item<double>(), 0.0, 0.02);
  EXPECT_NEAR(draws.var().item<double>(), 1.0, 0.03);
  run.train();
  // lr 1e-12 leaves the DiT's zero read-out at ~0: the flow returns its start, and the run's samples
  // are exactly those latents decoded.
  fm::SampleOptions so;
  so.initial = at::randn({6, 24}, gen);
  so.steps = 2;
  so.which_class = "even";
  fm::SampleResult r = run.sample(so);
  EXPECT_EQ(r.x.sizes(), (std::vector<int64_t>{6, 96}));
  EXPECT_TRUE(fmtest::AllClose(r.x, loaded.decode(so.initial), 1e-4, 1e-4));
  EXPECT_EQ(r.info["decoded_by"], ae["dir"]);
  // Held-out data of a latent run are the test images' latents.
  EXPECT_EQ(run.domain()->held_out(run.config()["data"], 3, gen).sizes(), (std::vector<int64_t>{3, 24}));

  // Its autoencoder gone, or another one in its place: one line naming the folder.
  fs::rename(dir / "ae", dir / "ae-moved");
  try {
    run.sample(so);
    ADD_FAILURE() << "sampled without its autoencoder";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("latent space of the autoencoder '" + ae["dir"].get<std::string>() + "', which is missing"),
              std::string::npos)
        << e.what();
  }
  fm::train_autoencoder_run(dir / "ae", o);  // same settings, another id
  try {
    run.sample(so);
    ADD_FAILURE() << "decoded by another autoencoder";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("holds another autoencoder"), std::string::npos) << e.what();
  }
  // An autoencoder of other images is refused when the run is made.
  fm::AutoencoderRunOptions wide = o;
  fm::data::ImageDataset padded{at::zeros({4, 1, 8, 16}, at::kByte), at::remainder(at::arange(4, at::kLong), 2), {"even", "odd"}};
  write_folder(padded, dir / "wide");
  wide.data = dir / "wide";
  fm::train_autoencoder_run(dir / "ae-wide", wide);
  try {
    fm::Run::prepare(dir / "bad", {{"data", dir / "bars"}, {"autoencoder", dir / "ae-wide"}});
    ADD_FAILURE() << "an autoencoder of 8x16 images accepted for 8x12 images";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("was trained on images of [1,8,16]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fm::describe_autoencoder(dir / "bars"), std::invalid_argument);
}

TEST(Autoencoder, AStoppedTrainingResumesToTheSameWeightsAndRefusesAnotherTrainingsState) {
  fmtest::TempDir dir;
  const auto set = bar_images(32, 7);
  const auto options = fm::AutoencoderOptions(1, 8, 12).channels(8).kl_weight(1e-3);  // z drawn: the generator matters
  const auto training = fm::AutoencoderTrainingOptions().steps(24).batch_size(8).lr(3e-3).seed(5);
  at::manual_seed(3);
  fm::Autoencoder straight(options);
  ASSERT_TRUE(fm::train_autoencoder(*straight, set, training));

  // The same training stopped after step 10 (the state written then, and at step 5), continued by a
  // network of other initial weights from the state file alone.
  const std::string state = dir / "state.ckpt";
  at::manual_seed(3);
  fm::Autoencoder first(options);
  int polls = 0;
  EXPECT_FALSE(fm::train_autoencoder(*first, set, fm::AutoencoderTrainingOptions(training).state_file(state).state_every(5), {},
                                     [&] { return ++polls == 10; }));
  ASSERT_TRUE(fs::exists(state));
  EXPECT_EQ(fm::read_checkpoint(state).meta["step"], 10);
  at::manual_seed(4);
  fm::Autoencoder resumed(options);
  std::vector<int64_t> steps;
  ASSERT_TRUE(fm::train_autoencoder(*resumed, set, fm::AutoencoderTrainingOptions(training).state_file(state).state_every(5),
                                    [&](const fm::AutoencoderProgress& p) { steps.push_back(p.step); }));
  EXPECT_EQ(steps, (std::vector<int64_t>{24}));  // the 14 steps left: progress only at the end
  const auto a = straight->named_parameters(), b = resumed->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) EXPECT_TRUE(at::equal(item.value(), b[item.key()])) << item.key();

  // A state made by another training (here: another step count, so another schedule) is refused.
  fm::Autoencoder other(options);
  try {
    fm::train_autoencoder(*other, set, fm::AutoencoderTrainingOptions(training).steps(30).state_file(state));
    ADD_FAILURE() << "another training's state was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("another training"), std::string::npos) << e.what();
  }

  // The run folder: stopped, it holds only the state; --resume finishes it and removes the state.
  fm::AutoencoderRunOptions o = bars_run(set, dir.str(), 20);
  polls = 0;
  EXPECT_TRUE(fm::train_autoencoder_run(dir / "ae", o, {}, {}, [&] { return ++polls == 7; }).is_null());
  EXPECT_TRUE(fs::exists(dir / "ae/training-state.ckpt"));
  EXPECT_FALSE(fs::exists(dir / "ae/autoencoder.ckpt"));
  EXPECT_THROW(fm::describe_autoencoder(dir / "ae"), std::invalid_argument);
  o.resume = true;
  const nlohmann::json metrics = fm::train_autoencoder_run(dir / "ae", o);
  EXPECT_TRUE(metrics.contains("test_psnr_db"));
  EXPECT_TRUE(fs::exists(dir / "ae/autoencoder.ckpt"));
  EXPECT_FALSE(fs::exists(dir / "ae/training-state.ckpt"));
  EXPECT_THROW(fm::train_autoencoder_run(dir / "ae", o), std::invalid_argument);       // finished
  EXPECT_THROW(fm::train_autoencoder_run(dir / "none", o), std::invalid_argument);     // nothing to resume
}
