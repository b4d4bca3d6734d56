// The launchers (and so the kernels) of d2conv3d for bfloat16 inputs: one translation unit,
// compiled in parallel with the other dtypes and operator.
#include "launchers.cuh"

namespace d2bench {
namespace cuda {

template struct Launch<at::BFloat16, DilationTaps<at::BFloat16, float>>;
template struct Launch<at::BFloat16, DilationTaps<float, float>>;  // float32 maps

}  // namespace cuda
}  // namespace d2bench
