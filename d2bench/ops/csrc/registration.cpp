// Schemas of the d2bench operators. Kernels register per backend (cpu/, cuda/); the fake kernels
// and autograd are registered from Python (d2bench/ops/_registration.py).
#include <torch/library.h>

TORCH_LIBRARY(d2bench, m) {
  m.def(
      "d2conv3d(Tensor input, Tensor dilation_map, Tensor? modulation, Tensor weight, "
      "Tensor? bias, int[3] stride, int[3] padding, int[3] dilation) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // Returns (grad_input, grad_dilation_map, grad_modulation, grad_weight); a gradient not asked
  // for in output_mask (or of an absent modulation) is an empty tensor of shape [0].
  m.def(
      "d2conv3d_backward(Tensor grad_output, Tensor input, Tensor dilation_map, "
      "Tensor? modulation, Tensor weight, int[3] stride, int[3] padding, int[3] dilation, "
      "bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "deform_conv3d(Tensor input, Tensor offset, Tensor? mask, Tensor weight, Tensor? bias, "
      "int[3] stride, int[3] padding, int[3] dilation, int offset_groups) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "deform_conv3d_backward(Tensor grad_output, Tensor input, Tensor offset, Tensor? mask, "
      "Tensor weight, int[3] stride, int[3] padding, int[3] dilation, int offset_groups, "
      "bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
}
