// Which CUDA kernels a call may take, where the launchers would otherwise choose: one setting per
// process, compiled into every build (the CPU-only one too, so the private operators that set and
// read it exist everywhere). The launchers read it on every call; it is set from Python through
// d2bench.ops.kernel_policy(...) (the private operator d2bench::_set_kernel_policy), never from
// the environment, so a measurement names the policy it ran under instead of inheriting one.
#pragma once

#include <cstdint>
#include <string>

namespace d2bench {

// The forward of a float16/bfloat16 call: the Hopper wgmma kernel wherever it applies (auto), or
// always the mma.sync kernel of fused_forward.cuh (mma), to compare the two.
enum class ForwardKernel { automatic, mma };

// The backward of a float16/bfloat16 call: the tensor-core kernels wherever they apply (auto), or
// always the CUDA-core kernels of simt_backward.cuh (cuda_core), to compare the two.
enum class BackwardKernel { automatic, cuda_core };

struct KernelPolicy {
  ForwardKernel forward = ForwardKernel::automatic;
  BackwardKernel backward = BackwardKernel::automatic;
  // The CUDA-core backward's tile height for both its kernels: 64 or 128 rows, or 0 to let its
  // wave model choose (measuring both heights on a shape needs each one forced).
  int64_t backward_rows = 0;
  // The tensor-core weight gradient's input channels per CTA: 32 or 64, or 0 to let its launcher
  // choose (more channels per CTA read ∂L/∂out fewer times, fewer CTAs fill the GPU less).
  int64_t weight_grad_channels = 0;
};

// The policy in force (a copy: safe to read while another thread sets it).
KernelPolicy kernel_policy();

// Sets the policy from the names the Python side uses ("auto" | "mma", "auto" | "cuda_core",
// 0 | 64 | 128, 0 | 32 | 64); any other value is an error naming the allowed ones, and leaves it
// unchanged.
void set_kernel_policy(const std::string& forward, const std::string& backward,
                       int64_t backward_rows, int64_t weight_grad_channels);

// The policy in force as those names.
std::string forward_kernel_name(ForwardKernel kernel);
std::string backward_kernel_name(BackwardKernel kernel);

}  // namespace d2bench
