// The launchers (and so the kernels) of d2conv3d for double inputs: one translation unit,
// compiled in parallel with the other dtypes and operator.
#include "launchers.cuh"

namespace d2bench {
namespace cuda {

template struct Launch<double, DilationTaps<double, double>>;

}  // namespace cuda
}  // namespace d2bench
