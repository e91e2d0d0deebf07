// TorchScript velocity models built in C++ (torch::jit::Module): loaded, integrated against a closed
// form, cloned through their description; a wrong signature is named.
#include <cmath>

#include <torch/csrc/jit/api/module.h>

#include "flowmatch/models/mlp.h"
#include "flowmatch/models/torchscript.h"
#include "flowmatch/solvers.h"
#include "test_util.h"

namespace fm = flowmatch;

TEST(TorchScriptModel, LinearFieldBuiltInCppMatchesTheClosedForm) {
  fmtest::TempDir dir;
  torch::jit::Module m("Velocity");
  m.register_parameter("rate", at::tensor({2.0}, at::kDouble), /*is_buffer=*/false);
  m.define(R"(
def forward(self, x, t):
    return x * self.rate + t.unsqueeze(1)
)");
  m.save(dir / "v.pt");
  auto model = std::make_shared<fm::models::TorchScriptModel>(dir / "v.pt");
  EXPECT_EQ(model->parameters().size(), 1u);
  EXPECT_EQ(model->spec()["type"], "torchscript");
  // dx/dt = 2x + t: x(t) = (x0 + 1/4) e^{2t} − t/2 − 1/4.
  at::Tensor x0 = at::tensor({0.5, -1.0, 2.0, 0.0}, at::kDouble).view({2, 2});
  auto r = fm::solve_ode(fm::as_velocity_field(model), x0, fm::SolverOptions().method(fm::SolverMethod::RK4).steps(200));
  at::Tensor exact = (x0 + 0.25) * std::exp(2.0) - 0.5 - 0.25;
  EXPECT_TRUE(fmtest::AllClose(r.x, exact, 0, 1e-7));
  // Cloning goes through the description (reload) and copies the parameters.
  {
    torch::NoGradGuard no_grad;
    model->parameters()[0].fill_(3.0);
  }
  auto copy = model->clone_model();
  EXPECT_EQ(copy->parameters()[0].item<double>(), 3.0);
}

TEST(TorchScriptModel, WrongSignatureAndShapeAreNamed) {
  fmtest::TempDir dir;
  torch::jit::Module one("One");
  one.define("def forward(self, x):\n    return x\n");
  one.save(dir / "one.pt");
  try {
    fm::models::TorchScriptModel m(dir / "one.pt");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("forward(self, x: Tensor, t: Tensor)"), std::string::npos) << e.what();
  }
  torch::jit::Module wide("Wide");
  wide.define("def forward(self, x, t):\n    return torch.cat([x, x], 1)\n");
  wide.save(dir / "wide.pt");
  fm::models::TorchScriptModel m(dir / "wide.pt");
  try {
    m.forward(at::zeros({3, 2}), at::zeros({}));
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("shaped like x"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fm::models::TorchScriptModel(dir / "missing.pt"), std::runtime_error);
}

// Exported MLPs compute the same function as the C++ network, for every activation and time encoding.
TEST(TorchScriptExport, MatchesTheNetworkForEveryActivationAndTimeEncoding) {
  fmtest::TempDir dir;
  auto g = fmtest::generator(4);
  at::Tensor x = at::randn({64, 3}, g), t = at::rand({64}, g);
  for (auto activation : {fm::models::Activation::SELU, fm::models::Activation::SiLU, fm::models::Activation::ReLU,
                          fm::models::Activation::GELU}) {
    for (auto encoding : {fm::models::TimeEncoding::Plain, fm::models::TimeEncoding::Sinusoidal}) {
      at::manual_seed(1);
      fm::models::MLPImpl net(fm::models::MLPOptions(3).width(24).depth(2).activation(activation).time_encoding(encoding).time_features(8));
      const std::string file = dir / "mlp.pt";
      fm::models::export_torchscript(net, file);
      fm::models::TorchScriptModel loaded(file);
      at::NoGradGuard no_grad;
      EXPECT_TRUE(fmtest::AllClose(loaded.forward(x, t), net.forward(x, t), 1e-5, 1e-6))
          << fm::models::to_string(activation) << " " << fm::models::to_string(encoding);
      EXPECT_TRUE(fmtest::AllClose(loaded.forward(x, at::scalar_tensor(0.3)), net.forward(x, at::scalar_tensor(0.3)), 1e-5, 1e-6));
    }
  }
}
