// CUDA entry points of d2bench::d2conv3d and d2bench::deform_conv3d (forward and backward).
//
// Forward: a fused implicit-GEMM kernel, no im2col buffer; the weight is read in channels_last_3d
// order (a weight held that way is not copied). On Hopper, float16/bfloat16 calls with
// channels_last_3d input take the wgmma kernel of hopper_forward.cuh; other calls the mma.sync
// (16-bit) or SIMT (float32/float64) kernels of fused_forward.cuh.
// Backward, float16/bfloat16 with channels_last_3d input and ∂L/∂out: two fused implicit GEMMs
// (fused_backward.cuh), no column buffer; the extra memory is a float32 accumulator of 64 input
// channels. Other calls (and D2BENCH_CUDA_BACKWARD=columns): per chunk of output voxels, the
// sampled columns are gathered (for the weight gradient) and ∂L/∂columns is formed by cuBLAS; a
// warp-per-voxel kernel turns it into the input gradient and the coordinate/modulation
// gradients. The column buffer is kept within the output's size only where that leaves chunks of
// at least kMinChunk voxels. Both backward paths add the input gradient with float atomics, so
// PyTorch's deterministic mode raises; the other gradients are deterministic.
//
// Everything runs on the current stream of the input's device, with 64-bit indexing. Sampling
// coordinates are float32 or wider: for float16/bfloat16 inputs the maps may be float32.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <string>
#include <tuple>
#include <type_traits>

#include "../checks.h"
#include "backward_kernels.cuh"
#include "common.cuh"
#include "fused_backward.cuh"
#include "fused_forward.cuh"
#include "hopper_forward.cuh"

namespace d2bench {
namespace cuda {
namespace {

template <typename scalar_t>
constexpr bool kReducedPrecision =
    std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>;

// Input, coordinate map and optional modulation, made packed and checked.
struct SamplingArgs {
  at::Tensor input, coords, mask, weight;
  ConvShape shape;
};

SamplingArgs prepare(const at::Tensor& input, const at::Tensor& coords,
                     const c10::optional<at::Tensor>& mask, const at::Tensor& weight,
                     const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                     const char* coords_name, int64_t coords_channels, const char* mask_name,
                     int64_t mask_channels) {
  const ConvShape s = make_shape(input, weight, bias, stride, padding, dilation, groups);
  check_map(input, coords, coords_name, coords_channels, s);
  if (mask.has_value()) {
    check_map(input, *mask, mask_name, mask_channels, s);
    TORCH_CHECK(mask->scalar_type() == coords.scalar_type(), mask_name, " has dtype ",
                mask->scalar_type(), " but ", coords_name, " has ", coords.scalar_type());
  }
  TORCH_CHECK(input.is_cuda(), "expected CUDA tensors");
  return SamplingArgs{packed_layout(input) ? input : input.contiguous(), coords.contiguous(),
                      mask.has_value() ? mask->contiguous() : at::Tensor(), weight, s};
}

// One CTA per SM (no register cap, no spills) or two (capped at 128 registers, which spills a
// little but lets one CTA's gathers overlap the other's products). Measured on an H200: two win
// when the grid is a few waves long; one wins when the grid fits in one CTA per SM (a second
// slot per SM would stay empty) and, for the 16-bit tile, when it is many waves long (the finer
// waves of one-CTA slots lose less to the last, partial wave; the float32 tile stays faster in
// pairs there: 13.9 → 13.3 ms at batch 2, 8×60×108). A grid that would leave SMs idle gets tiles of half
// the rows instead (the 1/16-scale layers: 3,240 voxels are 51 CTAs of 64 rows on 132 SMs).
template <typename scalar_t, typename Taps, template <typename, int, int> class TileT, int Rows>
void launch_fused(const at::Tensor& x, const Taps& taps, const at::Tensor& w_cl,
                  const at::Tensor& bias, at::Tensor& out) {
  const ConvShape& s = taps.shape;
  const Layout xl = Layout::of(x), ol = Layout::of(out);
  constexpr int64_t vec = 16 / sizeof(scalar_t);
  const bool vector_loads = xl.channel == 1 && s.group_channels() % vec == 0 &&
                            xl.voxel % vec == 0 && xl.batch % vec == 0 &&
                            reinterpret_cast<uintptr_t>(x.const_data_ptr()) % 16 == 0;
  // Each (output channel, tap, group) run of channels starts 16-byte aligned.
  const bool vector_weights = s.group_channels() % vec == 0 &&
                              reinterpret_cast<uintptr_t>(w_cl.const_data_ptr()) % 16 == 0;
  const int64_t rows = s.batch * s.out_plane();
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const auto launch = [&](auto* kernel, int threads, int bm, int bn) {
    const dim3 grid(static_cast<unsigned>(ceil_div(rows, bm) * ceil_div(s.out_channels, bn)));
    kernel<<<grid, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), xl, taps, w_cl.const_data_ptr<scalar_t>(),
        bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(),
        ol, vector_loads, vector_weights);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  using Pair = TileT<scalar_t, 2, Rows>;
  using Solo = TileT<scalar_t, 1, Rows>;
  using Half = TileT<scalar_t, 1, Rows / 2>;
  const int64_t ctas = ceil_div(rows, Rows) * ceil_div(s.out_channels, Pair::BN);
  if (ctas < sms) {
    launch(&fused_forward_kernel<scalar_t, Taps, Half>, Half::THREADS, Half::BM, Half::BN);
  } else if (ctas == sms || (kReducedPrecision<scalar_t> && ctas >= 8 * sms)) {
    launch(&fused_forward_kernel<scalar_t, Taps, Solo>, Solo::THREADS, Solo::BM, Solo::BN);
  } else {
    launch(&fused_forward_kernel<scalar_t, Taps, Pair>, Pair::THREADS, Pair::BM, Pair::BN);
  }
}

// Which forward serves a 16-bit call: by default the Hopper kernel wherever it applies;
// D2BENCH_CUDA_FORWARD=mma keeps the mma.sync kernel of fused_forward.cuh.
bool hopper_forward_wanted() {
  const char* choice = std::getenv("D2BENCH_CUDA_FORWARD");
  return choice == nullptr || std::string(choice) != "mma";
}

#ifdef D2BENCH_SM90A_BUILD
// cuTensorMapEncodeTiled from the driver, looked up once (no link against libcuda).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult status{};
    const cudaError_t error = cudaGetDriverEntryPointByVersion(
        "cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &status);
    const bool found = error == cudaSuccess && status == cudaDriverEntryPointSuccess;
    return found ? reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn) : nullptr;
  }();
  return encode;
}

// The weight in channels_last_3d order as a 2-D tensor of C_out rows × 27·C_in columns, read in
// boxes of 256 rows × 32 columns (64 bytes) with the 64-byte swizzle of the MMAs' B tile.
template <typename scalar_t>
bool weight_tensor_map(const at::Tensor& w_cl, CUtensorMap& map) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) return false;
  const int64_t rows = w_cl.size(0), columns = 27 * w_cl.size(1);
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(columns), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(columns * sizeof(scalar_t))};
  const cuuint32_t box[2] = {HopperTile::BK, HopperTile::BN};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult result = encode(
      &map, std::is_same_v<scalar_t, at::Half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                               : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
      2, const_cast<void*>(w_cl.const_data_ptr()), dims, strides, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_64B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return result == CUDA_SUCCESS;
}
#endif

// Runs the Hopper forward (hopper_forward.cuh) if this build, device and call allow it; false
// leaves the call to the other kernels. It needs a build for sm_90a, a
// compute-capability-9.0 device, channels_last_3d input with 16-byte aligned runs of 8 channels,
// channels per offset group a multiple of 32, and fewer than 2³¹ voxels per input volume.
template <typename scalar_t, typename Taps>
bool launch_hopper_forward(const at::Tensor& x, const Taps& taps, const at::Tensor& w_cl,
                           const at::Tensor& bias, at::Tensor& out) {
#ifdef D2BENCH_SM90A_BUILD
  using T = HopperTile;
  if (!hopper_forward_wanted()) return false;
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  if (prop->major != 9 || prop->minor != 0) return false;
  const ConvShape& s = taps.shape;
  const Layout xl = Layout::of(x), ol = Layout::of(out);
  const auto aligned = [](const at::Tensor& t, uintptr_t bytes) {
    return reinterpret_cast<uintptr_t>(t.const_data_ptr()) % bytes == 0;
  };
  const bool applies = xl.channel == 1 && xl.voxel % 8 == 0 && xl.batch % 8 == 0 &&
                       aligned(x, 16) && aligned(w_cl, 16) && s.group_channels() % T::BK == 0 &&
                       s.in_plane() < (int64_t(1) << 31) && 27 * s.channels < (int64_t(1) << 31);
  if (!applies) return false;
  const int64_t rows = s.batch * s.out_plane();
  const int64_t ctas = ceil_div(rows, T::BM) * ceil_div(s.out_channels, T::BN);
  CUtensorMap weight_map;
  if (!weight_tensor_map<scalar_t>(w_cl, weight_map)) return false;
  const auto kernel = &hopper_forward_kernel<scalar_t, Taps>;
  C10_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::SMEM_BYTES));
  // Two output channels per 32-bit store where the output is channels_last_3d.
  const bool pair_stores =
      ol.channel == 1 && ol.voxel % 2 == 0 && ol.batch % 2 == 0 && aligned(out, 4);
  kernel<<<static_cast<unsigned>(ctas), T::THREADS, T::SMEM_BYTES,
           at::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<scalar_t>(), xl, taps, weight_map,
      bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), ol,
      pair_stores);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
#else
  (void)x, (void)taps, (void)w_cl, (void)bias, (void)out;
  return false;
#endif
}

template <typename scalar_t, typename Taps>
void launch_forward(const at::Tensor& x, const Taps& taps, const at::Tensor& weight,
                    const at::Tensor& bias, at::Tensor& out) {
  // The B operand is read in channels_last_3d order (W[o, tap, c]); a weight already held that
  // way (as cuDNN also prefers for channels_last_3d convolutions) is used without a copy.
  const at::Tensor w_cl = weight.contiguous(at::MemoryFormat::ChannelsLast3d);
  if constexpr (kReducedPrecision<scalar_t>) {
    if (launch_hopper_forward<scalar_t>(x, taps, w_cl, bias, out)) return;
    launch_fused<scalar_t, Taps, MmaTile, 64>(x, taps, w_cl, bias, out);
  } else {
    launch_fused<scalar_t, Taps, SimtTile, 128>(x, taps, w_cl, bias, out);
  }
}

// Voxels per backward chunk. The column buffer (chunk × 27·C) is kept within the output's size
// where that still leaves chunks of at least kMinChunk voxels (enough to fill the GPU and keep
// the GEMMs efficient), and within kMaxColumnElements in any case.
constexpr int64_t kMinChunk = 8192;
constexpr int64_t kMaxColumnElements = int64_t(1) << 28;

int64_t backward_chunk(const ConvShape& s) {
  const int64_t width = 27 * s.channels;
  const int64_t by_output = s.batch * s.out_channels * s.out_plane() / width;
  const int64_t chunk = std::min(std::max(by_output, kMinChunk), kMaxColumnElements / width);
  return std::max<int64_t>(32, std::min<int64_t>(s.out_plane(), chunk));
}

template <typename scalar_t, typename Taps>
void launch_backward(const at::Tensor& grad_out, const at::Tensor& x, const Taps& taps,
                     const at::Tensor& weight, at::Tensor& grad_input, at::Tensor& grad_w2,
                     bool coordinates) {
  using acc_t = at::opmath_type<scalar_t>;
  const ConvShape& s = taps.shape;
  const Layout xl = Layout::of(x);
  const int64_t width = 27 * s.channels, chunk = backward_chunk(s);
  const at::Tensor w2 = weight.permute({0, 2, 3, 4, 1}).reshape({s.out_channels, width});
  at::Tensor cols = at::empty({chunk * width}, x.options());
  at::Tensor grad_x_acc;
  if (grad_input.defined()) {
    if (grad_input.scalar_type() == c10::CppTypeToScalarType<acc_t>::value) {
      grad_x_acc = grad_input;
    } else {
      grad_x_acc = at::zeros_like(x, x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    }
  }
  const auto stream = at::cuda::getCurrentCUDAStream();
  // Four contiguous channels per lane (8- or 16-byte accesses, float4 atomics) where the layout
  // and alignment allow; float64 keeps the scalar path.
  const auto aligned = [](const at::Tensor& t, int64_t bytes) {
    return !t.defined() || reinterpret_cast<uintptr_t>(t.const_data_ptr()) % bytes == 0;
  };
  const bool vector4 = std::is_same_v<acc_t, float> && xl.channel == 1 &&
                       s.group_channels() % 4 == 0 && xl.voxel % 4 == 0 && xl.batch % 4 == 0 &&
                       aligned(x, 4 * sizeof(scalar_t)) && aligned(cols, 4 * sizeof(scalar_t)) &&
                       aligned(grad_x_acc, 16) &&
                       (!grad_x_acc.defined() || Layout::of(grad_x_acc).channel == 1);
  for (int64_t n = 0; n < s.batch; ++n) {
    const at::Tensor gout_n = grad_out[n].reshape({s.out_channels, s.out_plane()});
    for (int64_t p0 = 0; p0 < s.out_plane(); p0 += chunk) {
      const int64_t count = std::min(chunk, s.out_plane() - p0);
      at::Tensor block = cols.narrow(0, 0, count * width).view({count, width});
      const at::Tensor gout = gout_n.narrow(1, p0, count);  // C_out × count
      const unsigned blocks = static_cast<unsigned>(ceil_div(count, kWarpsPerBlock));
      if (grad_w2.defined()) {
        gather_columns_kernel<scalar_t, Taps><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
            x.const_data_ptr<scalar_t>(), xl, taps, n, p0, count, block.data_ptr<scalar_t>(),
            vector4);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        if (grad_w2.scalar_type() == x.scalar_type()) {
          grad_w2.addmm_(gout, block);
        } else {
          grad_w2.add_(at::mm(gout, block));  // cuBLAS accumulates in fp32; sum chunks in fp32
        }
      }
      if (!grad_x_acc.defined() && !coordinates) continue;
      at::mm_out(block, gout.t(), w2);  // ∂L/∂columns, reusing the buffer
      backward_sampling_kernel<scalar_t, acc_t, Taps><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), xl, taps, n, p0, count, block.const_data_ptr<scalar_t>(),
          grad_x_acc.defined() ? grad_x_acc.data_ptr<acc_t>() : nullptr, coordinates, vector4);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  if (grad_x_acc.defined() && !grad_x_acc.is_same(grad_input)) grad_input.copy_(grad_x_acc);
}

// Whether the fused backward (fused_backward.cuh) serves this call: 16-bit types, the input
// and ∂L/∂out channels_last_3d (channels innermost, samples packed), and every run of 8 channels
// 16-byte aligned. Other calls take the chunked backward below.
bool fused_backward_applies(const at::Tensor& x, const at::Tensor& gout, const ConvShape& s) {
  const auto t = x.scalar_type();
  const auto aligned = [](const at::Tensor& u) {
    return reinterpret_cast<uintptr_t>(u.const_data_ptr()) % 16 == 0;
  };
  // D2BENCH_CUDA_BACKWARD=columns keeps the chunked backward: faster, but with a column buffer
  // larger than the output.
  const char* choice = std::getenv("D2BENCH_CUDA_BACKWARD");
  if (choice != nullptr && std::string(choice) == "columns") return false;
  const Layout gl = Layout::of(gout);
  return (t == at::kHalf || t == at::kBFloat16) && Layout::of(x).channel == 1 &&
         gl.channel == 1 && gl.batch == s.out_plane() * gl.voxel && s.group_channels() % 8 == 0 &&
         s.out_channels % 8 == 0 && aligned(x) && aligned(gout);
}

// Into how many shares input_grad_kernel splits the 27 taps of a voxel tile: the fewest that
// give at least one full wave of CTAs over `slots` and lose at most 15% to the last wave's empty
// slots (each share re-reads the tile's ∂L/∂out, so more are not free).
int tap_split(int64_t tiles, int64_t slots) {
  for (int split = 1; split < 27; ++split) {
    const int64_t ctas = tiles * split, waves = ceil_div(ctas, slots);
    if (ctas >= slots && static_cast<double>(ctas) >= 0.85 * static_cast<double>(waves * slots)) {
      return split;
    }
  }
  return 27;
}

// Channel blocks of the fused backward's input-gradient accumulator (float32, CB channels of
// every input voxel): one launch of input_grad_kernel per block, the block then converted into
// grad_input. CB = 64 keeps the accumulator at half the input's size for 16-bit inputs of 256
// channels, within the output's size at the paper's layers.
template <typename scalar_t, typename Taps>
void launch_fused_backward(const at::Tensor& gout, const at::Tensor& x, const Taps& taps,
                           const at::Tensor& weight, at::Tensor& grad_input,
                           at::Tensor& grad_weight, bool coordinates) {
  const ConvShape& s = taps.shape;
  const Layout xl = Layout::of(x), gl = Layout::of(gout);
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t cg = s.group_channels();
  if (grad_weight.defined()) {
    using T = WeightGradTile;
    const auto kernel = &weight_grad_kernel<scalar_t, Taps>;
    constexpr int smem = sizeof(WeightGradSmem<typename MmaType<scalar_t>::type>);
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    const dim3 grid(static_cast<unsigned>(27 * s.groups * ceil_div(cg, T::CB)),
                    static_cast<unsigned>(ceil_div(s.out_channels, T::BN)));
    kernel<<<grid, T::THREADS, smem, stream>>>(
        x.const_data_ptr<scalar_t>(), xl, taps, gout.const_data_ptr<scalar_t>(), gl,
        grad_weight.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (!grad_input.defined() && !coordinates) return;
  using T = InputGradTile;
  // Read in channels_last_3d order, as the forward reads it; 16-byte aligned for cp.async.
  at::Tensor w_cl = weight.contiguous(at::MemoryFormat::ChannelsLast3d);
  if (reinterpret_cast<uintptr_t>(w_cl.const_data_ptr()) % 16 != 0) {
    w_cl = w_cl.clone(at::MemoryFormat::ChannelsLast3d);
  }
  at::Tensor block_acc;  // N × T × H × W × CB, float32
  if (grad_input.defined()) {
    block_acc = at::empty({s.batch, s.depth, s.height, s.width, T::CB},
                          x.options().dtype(at::kFloat));
  }
  const auto kernel = &input_grad_kernel<scalar_t, Taps>;
  constexpr int smem =
      sizeof(InputGradSmem<typename MmaType<scalar_t>::type, typename Taps::Voxel>);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const int64_t tiles = ceil_div(s.batch * s.out_plane(), T::BM);
  // The taps of a voxel tile are split over several CTAs where the tiles alone would leave SMs
  // idle or the last wave mostly empty. The split CTAs then share the coordinate gradients of
  // their voxels (atomics, float/double maps only); the input gradient already uses atomics, so
  // a call without it keeps one CTA per tile and stays deterministic.
  using map_t = typename Taps::map_type;
  constexpr bool atomic_maps = std::is_same_v<map_t, float> || std::is_same_v<map_t, double>;
  int split = 1;
  if (atomic_maps && grad_input.defined()) {
    int per_sm = 0;
    C10_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, T::THREADS, smem));
    const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
    split = tap_split(tiles, std::max(per_sm, 1) * sms);
  }
  Taps adding = taps;  // the coordinate gradients sum over the channel blocks (and tap shares)
  adding.store = split > 1 ? GradStore::atomic_add : GradStore::add;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(split));
  for (int64_t g = 0; g < s.groups; ++g) {
    for (int64_t c0 = 0; c0 < cg; c0 += T::CB) {
      const int64_t cb0 = g * cg + c0, count = std::min<int64_t>(T::CB, cg - c0);
      if (block_acc.defined()) block_acc.zero_();
      kernel<<<grid, T::THREADS, smem, stream>>>(
          x.const_data_ptr<scalar_t>(), xl, adding, gout.const_data_ptr<scalar_t>(), gl,
          w_cl.const_data_ptr<scalar_t>(), cb0,
          block_acc.defined() ? block_acc.data_ptr<float>() : nullptr, coordinates);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (block_acc.defined()) {
        grad_input.narrow(1, cb0, count)
            .copy_(block_acc.permute({0, 4, 1, 2, 3}).narrow(1, 0, count));
      }
    }
  }
}

void check_cuda_dtype(const at::Tensor& input, const char* op) {
  const auto t = input.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16, op,
              " on CUDA supports float16, bfloat16, float32 and float64, got ", t);
}

template <typename T>
struct Tag {
  using type = T;
};

template <template <typename, typename> class TapsT>
int64_t coords_channels(int64_t groups);
template <>
int64_t coords_channels<DilationTaps>(int64_t) {
  return 3;
}
template <>
int64_t coords_channels<DeformTaps>(int64_t groups) {
  return 3 * 27 * groups;
}

// Runs body(Tag<scalar_t>, Tag<map_t>) for the input dtype and the maps' dtype.
template <typename Body>
void dispatch(const at::Tensor& input, const at::Tensor& coords, Body&& body) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "d2bench", [&] {
    if constexpr (kReducedPrecision<scalar_t>) {
      if (coords.scalar_type() == at::kFloat) {
        body(Tag<scalar_t>{}, Tag<float>{});
        return;
      }
    }
    body(Tag<scalar_t>{}, Tag<scalar_t>{});
  });
}

template <template <typename, typename> class TapsT>
at::Tensor forward(const at::Tensor& input, const at::Tensor& coords,
                   const c10::optional<at::Tensor>& mask, const at::Tensor& weight,
                   const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                   at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                   const char* op, const char* coords_name, const char* mask_name) {
  check_cuda_dtype(input, op);
  const c10::cuda::CUDAGuard guard(input.device());
  SamplingArgs a = prepare(input, coords, mask, weight, bias, stride, padding, dilation, groups,
                           coords_name, coords_channels<TapsT>(groups), mask_name, 27 * groups);
  const ConvShape& s = a.shape;
  at::Tensor out = at::empty({s.batch, s.out_channels, s.out_depth, s.out_height, s.out_width},
                             input.options().memory_format(format_of(a.input)));
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  dispatch(a.input, a.coords, [&](auto scalar_tag, auto map_tag) {
    using scalar_t = typename decltype(scalar_tag)::type;
    using map_t = typename decltype(map_tag)::type;
    using coord_t = coord_type<scalar_t>;
    const TapsT<map_t, coord_t> taps{s, a.coords.const_data_ptr<map_t>(),
                                     ptr_or_null<map_t>(a.mask), nullptr, nullptr};
    launch_forward<scalar_t>(a.input, taps, a.weight, b, out);
  });
  return out;
}

template <template <typename, typename> class TapsT>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& coords,
    const c10::optional<at::Tensor>& mask, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 4> output_mask, const char* op, const char* coords_name,
    const char* mask_name) {
  check_cuda_dtype(input, op);
  const c10::cuda::CUDAGuard guard(input.device());
  SamplingArgs a = prepare(input, coords, mask, weight, c10::nullopt, stride, padding, dilation,
                           groups, coords_name, coords_channels<TapsT>(groups), mask_name,
                           27 * groups);
  const ConvShape& s = a.shape;
  check_grad_output(grad_output, input, s);
  const at::Tensor gout = packed_layout(grad_output) ? grad_output : grad_output.contiguous();
  if (output_mask[0]) {
    at::globalContext().alertNotDeterministic(op);  // the input gradient uses atomics
  }
  const auto empty = at::empty({0}, input.options());
  const bool fused = fused_backward_applies(a.input, gout, s);
  // The fused backward adds each channel block's share into the coordinate gradients, and
  // writes every element of the input gradient.
  const auto maybe_zeros_like = [&](bool wanted, const at::Tensor& like) {
    if (!wanted) return empty;
    return fused ? at::zeros_like(like) : at::empty_like(like);
  };
  at::Tensor grad_input = !output_mask[0] ? at::Tensor()
                          : fused         ? at::empty_like(a.input)
                                          : at::zeros_like(a.input);
  at::Tensor grad_coords = maybe_zeros_like(output_mask[1], a.coords);
  at::Tensor grad_mask = maybe_zeros_like(output_mask[2] && a.mask.defined(), a.mask);
  const bool coordinates = grad_coords.numel() > 0 || grad_mask.numel() > 0;
  at::Tensor grad_weight = empty;
  dispatch(a.input, a.coords, [&](auto scalar_tag, auto map_tag) {
    using scalar_t = typename decltype(scalar_tag)::type;
    using map_t = typename decltype(map_tag)::type;
    using coord_t = coord_type<scalar_t>;
    const TapsT<map_t, coord_t> taps{s, a.coords.const_data_ptr<map_t>(),
                                     ptr_or_null<map_t>(a.mask), mutable_or_null<map_t>(grad_coords),
                                     mutable_or_null<map_t>(grad_mask)};
    if constexpr (kReducedPrecision<scalar_t>) {
      if (fused) {
        if (output_mask[3]) grad_weight = at::empty(weight.sizes(), weight.options());
        at::Tensor grad_w = output_mask[3] ? grad_weight : at::Tensor();
        launch_fused_backward<scalar_t>(gout, a.input, taps, a.weight, grad_input, grad_w,
                                        coordinates);
        return;
      }
    }
    const auto w_acc_type = a.weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor grad_w2 = output_mask[3]
                             ? at::zeros({s.out_channels, 27 * s.channels},
                                         a.weight.options().dtype(w_acc_type))
                             : at::Tensor();
    launch_backward<scalar_t>(gout, a.input, taps, a.weight, grad_input, grad_w2, coordinates);
    if (grad_w2.defined()) {
      grad_weight = grad_w2.view({s.out_channels, 3, 3, 3, s.channels})
                        .permute({0, 4, 1, 2, 3})
                        .to(weight.scalar_type())
                        .contiguous();
    }
  });
  return {grad_input.defined() ? grad_input : empty, grad_coords, grad_mask, grad_weight};
}

at::Tensor d2conv3d_cuda(const at::Tensor& input, const at::Tensor& dilation_map,
                         const c10::optional<at::Tensor>& modulation, const at::Tensor& weight,
                         const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation) {
  return forward<DilationTaps>(input, dilation_map, modulation, weight, bias, stride, padding,
                               dilation, 1, "d2conv3d_cuda", "dilation_map", "modulation");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> d2conv3d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& dilation_map,
    const c10::optional<at::Tensor>& modulation, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    std::array<bool, 4> output_mask) {
  return backward<DilationTaps>(grad_output, input, dilation_map, modulation, weight, stride,
                                padding, dilation, 1, output_mask, "d2conv3d_backward_cuda",
                                "dilation_map", "modulation");
}

at::Tensor deform_conv3d_cuda(const at::Tensor& input, const at::Tensor& offset,
                              const c10::optional<at::Tensor>& mask, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation,
                              int64_t offset_groups) {
  return forward<DeformTaps>(input, offset, mask, weight, bias, stride, padding, dilation,
                             offset_groups, "deform_conv3d_cuda", "offset", "mask");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv3d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset,
    const c10::optional<at::Tensor>& mask, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t offset_groups,
    std::array<bool, 4> output_mask) {
  return backward<DeformTaps>(grad_output, input, offset, mask, weight, stride, padding,
                              dilation, offset_groups, output_mask,
                              "deform_conv3d_backward_cuda", "offset", "mask");
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(d2bench, CUDA, m) {
  m.impl("d2conv3d", &cuda::d2conv3d_cuda);
  m.impl("d2conv3d_backward", &cuda::d2conv3d_backward_cuda);
  m.impl("deform_conv3d", &cuda::deform_conv3d_cuda);
  m.impl("deform_conv3d_backward", &cuda::deform_conv3d_backward_cuda);
}

}  // namespace d2bench
