// Emulation stand-in: CUDA calls cannot fail.
#pragma once
#define C10_CUDA_CHECK(x) (void)(x)
#define C10_CUDA_KERNEL_LAUNCH_CHECK() (void)0
