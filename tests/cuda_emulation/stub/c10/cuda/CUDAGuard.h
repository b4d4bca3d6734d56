// Emulation stand-in: there is one (host) device.
#pragma once
#include <c10/core/Device.h>
namespace c10 { namespace cuda { struct CUDAGuard { explicit CUDAGuard(c10::Device) {} }; }}
