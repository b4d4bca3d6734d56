// Host-side argument checks shared by the CPU and CUDA entry points. The Python wrappers check
// the same things first with friendlier messages; these guard direct torch.ops calls, so a bad
// call raises instead of reading out of bounds.
#pragma once

#include <ATen/ATen.h>

#include "taps.h"

namespace d2bench {

inline void check_same(const at::Tensor& input, const at::Tensor& other, const char* name) {
  TORCH_CHECK(other.device() == input.device(), name, " is on ", other.device(),
              " but input is on ", input.device());
  TORCH_CHECK(other.scalar_type() == input.scalar_type(), name, " has dtype ",
              other.scalar_type(), " but input has ", input.scalar_type());
}

// channels_last_3d when the tensor is laid out that way (and not also plain contiguous).
inline at::MemoryFormat format_of(const at::Tensor& t) {
  return (!t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast3d))
             ? at::MemoryFormat::ChannelsLast3d
             : at::MemoryFormat::Contiguous;
}

// A per-output-voxel map: on input's device, in input's dtype or (for float16/bfloat16 inputs)
// float32, so that sampling coordinates never lose precision.
inline void check_map(const at::Tensor& input, const at::Tensor& map, const char* name,
                      int64_t channels, const ConvShape& s) {
  TORCH_CHECK(map.device() == input.device(), name, " is on ", map.device(),
              " but input is on ", input.device());
  const bool reduced = input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16;
  TORCH_CHECK(map.scalar_type() == input.scalar_type() ||
                  (reduced && map.scalar_type() == at::kFloat),
              name, " has dtype ", map.scalar_type(), "; it must have input's dtype (",
              input.scalar_type(), ") or float32 for a float16/bfloat16 input");
  TORCH_CHECK(map.dim() == 5 && map.size(0) == s.batch && map.size(1) == channels &&
                  map.size(2) == s.out_depth && map.size(3) == s.out_height &&
                  map.size(4) == s.out_width,
              name, " must have shape [", s.batch, ", ", channels, ", ", s.out_depth, ", ",
              s.out_height, ", ", s.out_width, "], got ", map.sizes());
}

// Validate input/weight/bias and the convolution parameters; return the call's shapes.
inline ConvShape make_shape(const at::Tensor& input, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(input.dim() == 5, "input must be 5-D (N, C, T, H, W), got ", input.sizes());
  TORCH_CHECK(input.is_floating_point(), "input must be floating point, got ",
              input.scalar_type());
  check_same(input, weight, "weight");
  TORCH_CHECK(weight.dim() == 5 && weight.size(2) == 3 && weight.size(3) == 3 &&
                  weight.size(4) == 3,
              "weight must be C_out x C_in x 3 x 3 x 3, got ", weight.sizes());
  TORCH_CHECK(weight.size(1) == input.size(1), "weight expects ", weight.size(1),
              " input channels but input has ", input.size(1));
  if (bias.has_value()) {
    check_same(input, *bias, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "bias must have shape [",
                weight.size(0), "], got ", bias->sizes());
  }
  TORCH_CHECK(stride.size() == 3 && padding.size() == 3 && dilation.size() == 3,
              "stride, padding and dilation must have 3 entries each");
  TORCH_CHECK(groups >= 1 && input.size(1) % groups == 0, "offset_groups (", groups,
              ") must be >= 1 and divide the ", input.size(1), " input channels");
  ConvShape s{};
  s.batch = input.size(0);
  s.channels = input.size(1);
  s.depth = input.size(2);
  s.height = input.size(3);
  s.width = input.size(4);
  s.out_channels = weight.size(0);
  s.groups = groups;
  int64_t* out[3] = {&s.out_depth, &s.out_height, &s.out_width};
  for (int a = 0; a < 3; ++a) {
    TORCH_CHECK(stride[a] >= 1 && padding[a] >= 0 && dilation[a] >= 1,
                "need stride >= 1, padding >= 0, dilation >= 1; got stride ", stride,
                ", padding ", padding, ", dilation ", dilation);
    s.stride[a] = stride[a];
    s.pad[a] = padding[a];
    s.dil[a] = dilation[a];
    *out[a] = (input.size(2 + a) + 2 * padding[a] - 2 * dilation[a] - 1) / stride[a] + 1;
    TORCH_CHECK(*out[a] >= 1, "input ", input.sizes(), " is too small for a 3x3x3 kernel with ",
                "padding ", padding, " and dilation ", dilation);
  }
  return s;
}

// grad_output must have the output's shape, device and dtype.
inline void check_grad_output(const at::Tensor& grad_output, const at::Tensor& input,
                              const ConvShape& s) {
  check_same(input, grad_output, "grad_output");
  TORCH_CHECK(grad_output.dim() == 5 && grad_output.size(0) == s.batch &&
                  grad_output.size(1) == s.out_channels && grad_output.size(2) == s.out_depth &&
                  grad_output.size(3) == s.out_height && grad_output.size(4) == s.out_width,
              "grad_output has shape ", grad_output.sizes(), ", expected the output's shape");
}

// Data pointers of optional tensors (undefined or empty: nullptr), as the kernels take them.
template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

template <typename T>
T* mutable_or_null(at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.data_ptr<T>() : nullptr;
}

}  // namespace d2bench
