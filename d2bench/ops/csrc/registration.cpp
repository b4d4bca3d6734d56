// Schemas of the d2bench operators. Kernels register per backend (cpu/, cuda/); the fake kernels
// and autograd are registered from Python (d2bench/ops/_registration.py). The private kernel-policy
// operators hold no tensors and have one kernel for every backend, defined here.
#include <torch/library.h>

#include <string>
#include <tuple>

#include "kernel_policy.h"

namespace {

std::tuple<std::string, std::string, int64_t, int64_t> get_kernel_policy() {
  const d2bench::KernelPolicy policy = d2bench::kernel_policy();
  return {d2bench::forward_kernel_name(policy.forward),
          d2bench::backward_kernel_name(policy.backward), policy.backward_rows,
          policy.weight_grad_channels};
}

void set_kernel_policy(std::string forward, std::string backward, int64_t backward_rows,
                       int64_t weight_grad_channels) {
  d2bench::set_kernel_policy(forward, backward, backward_rows, weight_grad_channels);
}

}  // namespace

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
  // Private: the kernel policy of kernel_policy.h, set and read through
  // d2bench.ops.kernel_policy(...) and d2bench.ops.current_kernel_policy().
  m.def(
      "_set_kernel_policy(str forward, str backward, int backward_rows, "
      "int weight_grad_channels) -> ()",
      &set_kernel_policy);
  m.def("_get_kernel_policy() -> (str, str, int, int)", &get_kernel_policy);
}
