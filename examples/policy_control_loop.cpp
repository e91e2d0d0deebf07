// A flow-matching policy in a C++ control loop: each tick reads an observation, samples an action chunk
// from noise with 10 Euler steps of the policy's velocity (batch 1, flowmatch/policy.h) and applies its
// first action to a simulated point mass. The weights come from a PyTorch policy saved with
// torch.save({"state_dict": policy.state_dict()}, "policy.pt") whose network is a torch.nn.Sequential
// named `net` over [action chunk, observation, t] (../shared/bench/ref_policy_latency.py's Policy);
// without a file the weights are random (the timing does not depend on them).
//
//   build/examples/example_policy_control_loop [policy.pt] [horizon=16] [action_dim=2]

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include "flowmatch/io/pt.h"
#include "flowmatch/policy.h"

int main(int argc, char** argv) {
  namespace fm = flowmatch;
  const int64_t horizon = argc > 2 ? std::stoll(argv[2]) : 16, action_dim = argc > 3 ? std::stoll(argv[3]) : 2;
  const int64_t action = horizon * action_dim;
  std::vector<std::pair<at::Tensor, at::Tensor>> layers;
  try {
    if (argc > 1) {
      layers = fm::sequential_linear_layers(fm::io::load_pt_tensors(argv[1]), "state_dict.net.");
    } else {
      at::manual_seed(0);
      int64_t in = action + 20 + 1;
      for (int k = 0; k < 4; ++k) {
        torch::nn::Linear layer(in, k == 3 ? action : 256);
        layers.emplace_back(layer->weight.detach(), layer->bias.detach());
        in = 256;
      }
    }
    const int64_t observation = layers.front().first.size(1) - action - 1;
    if (observation < 0) {
      throw std::runtime_error("the policy's first layer takes " + std::to_string(layers.front().first.size(1)) +
                               " inputs, fewer than an action chunk of " + std::to_string(action) + " and t");
    }
    const fm::EulerPolicySampler policy(fm::SmallBatchMLP(layers, fm::SmallBatchMLP::Activation::SiLU), action, observation, 10);

    // The plant: a point mass in the plane (position, velocity); the observation carries its state and,
    // in the rest of its slots, a fixed goal signal.
    std::vector<float> obs(static_cast<size_t>(observation), 0.5f), chunk(static_cast<size_t>(action));
    float position[2] = {1.0f, -1.0f}, velocity[2] = {0.0f, 0.0f};
    at::Generator noise = at::make_generator<at::CPUGeneratorImpl>(1);
    double total_us = 0, worst_us = 0;
    const int ticks = 200;
    for (int tick = 0; tick < ticks; ++tick) {
      for (int i = 0; i < 2 && i < observation; ++i) obs[i] = position[i];
      for (int i = 0; i < 2 && 2 + i < observation; ++i) obs[2 + i] = velocity[i];
      at::Tensor z = at::randn({action}, noise);  // the chunk's noise (drawn outside the timed part)
      std::copy(z.data_ptr<float>(), z.data_ptr<float>() + action, chunk.begin());
      const auto start = std::chrono::steady_clock::now();
      policy.sample(obs.data(), chunk.data());
      const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
      total_us += us;
      worst_us = std::max(worst_us, us);
      for (int i = 0; i < 2 && i < action_dim; ++i) {  // apply the chunk's first action as a force, dt = 0.01
        velocity[i] += 0.01f * chunk[i];
        position[i] += 0.01f * velocity[i];
      }
    }
    std::printf("%d ticks: sampling %.1f us on average, %.1f us at worst (action chunk %lld x %lld, observation %lld, 10 Euler steps); "
                "final position (%.3f, %.3f)\n",
                ticks, total_us / ticks, worst_us, static_cast<long long>(horizon), static_cast<long long>(action_dim),
                static_cast<long long>(observation), position[0], position[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "example_policy_control_loop: %s\n", e.what());
    return 1;
  }
  return 0;
}
