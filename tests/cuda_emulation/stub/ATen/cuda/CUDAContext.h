// Emulation stand-in: a device of 4 SMs (small grids then reach every launch configuration) and
// a null stream.
#pragma once
#include <ATen/ATen.h>
namespace at {
namespace cuda {
struct EmulatedProperties {
  int multiProcessorCount = 4;
  int major = 9, minor = 0;
};
inline const EmulatedProperties* getCurrentDeviceProperties() {
  static const EmulatedProperties properties;
  return &properties;
}
inline int getCurrentCUDAStream() { return 0; }
}  // namespace cuda
}  // namespace at
