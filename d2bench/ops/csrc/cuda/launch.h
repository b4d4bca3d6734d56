// The launchers the CUDA entry points call, one set per input dtype and tap type. Defined in
// launchers.cuh and instantiated in the instantiate_*.cu files, so the entry points' file
// compiles no kernel and the kernels of different dtypes compile in parallel.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <type_traits>

namespace d2bench {
namespace cuda {

template <typename scalar_t>
constexpr bool kReducedPrecision =
    std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>;

// Input channels the tensor-core backward accumulates per launch, in float32, for every input
// voxel (InputGradTile::CB): the entry points keep the calls whose accumulator would outgrow
// the output away from it.
constexpr int64_t kTensorCoreAccumulatorChannels = 64;

template <typename scalar_t, typename Taps>
struct Launch {
  // out = the sampled convolution of x (a fused implicit GEMM; the Hopper kernel where it applies).
  static void forward(const at::Tensor& x, const Taps& taps, const at::Tensor& weight,
                      const at::Tensor& bias, at::Tensor& out);
  // The mma.sync backward (fused_backward.cuh): 16-bit, channels_last_3d calls only.
  static void tensor_core_backward(const at::Tensor& gout, const at::Tensor& x, const Taps& taps,
                                   const at::Tensor& weight, at::Tensor& grad_input,
                                   at::Tensor& grad_weight, bool coordinates);
  // The CUDA-core backward (simt_backward.cuh): every other call.
  static void cuda_core_backward(const at::Tensor& gout, const at::Tensor& x, const Taps& taps,
                                 const at::Tensor& weight, at::Tensor& grad_input,
                                 at::Tensor& grad_weight, bool coordinates);
};

}  // namespace cuda
}  // namespace d2bench
