// The process-wide kernel policy (kernel_policy.h) and its private operators' bodies.
#include "kernel_policy.h"

#include <c10/util/Exception.h>

#include <mutex>

namespace d2bench {
namespace {

std::mutex& policy_guard() {
  static std::mutex guard;
  return guard;
}

KernelPolicy& policy_in_force() {
  static KernelPolicy policy;
  return policy;
}

}  // namespace

KernelPolicy kernel_policy() {
  const std::lock_guard<std::mutex> lock(policy_guard());
  return policy_in_force();
}

void set_kernel_policy(const std::string& forward, const std::string& backward,
                       int64_t backward_rows, int64_t weight_grad_channels) {
  TORCH_CHECK(forward == "auto" || forward == "mma",
              "kernel policy: forward must be 'auto' or 'mma', got '", forward, "'");
  TORCH_CHECK(backward == "auto" || backward == "cuda_core",
              "kernel policy: backward must be 'auto' or 'cuda_core', got '", backward, "'");
  TORCH_CHECK(backward_rows == 0 || backward_rows == 64 || backward_rows == 128,
              "kernel policy: backward_rows must be 0 (auto), 64 or 128, got ", backward_rows);
  TORCH_CHECK(weight_grad_channels == 0 || weight_grad_channels == 32 || weight_grad_channels == 64,
              "kernel policy: weight_grad_channels must be 0 (auto), 32 or 64, got ",
              weight_grad_channels);
  KernelPolicy policy;
  policy.forward = forward == "mma" ? ForwardKernel::mma : ForwardKernel::automatic;
  policy.backward = backward == "cuda_core" ? BackwardKernel::cuda_core : BackwardKernel::automatic;
  policy.backward_rows = backward_rows;
  policy.weight_grad_channels = weight_grad_channels;
  const std::lock_guard<std::mutex> lock(policy_guard());
  policy_in_force() = policy;
}

std::string forward_kernel_name(ForwardKernel kernel) {
  return kernel == ForwardKernel::mma ? "mma" : "auto";
}

std::string backward_kernel_name(BackwardKernel kernel) {
  return kernel == BackwardKernel::cuda_core ? "cuda_core" : "auto";
}

}  // namespace d2bench
