// Host launchers of the CUDA kernels: the tile, grid and path each call gets, for one input
// dtype and one tap type (Launch<scalar_t, Taps>, declared in launch.h). Included only by the
// instantiate_*.cu files, one per (dtype, operator), so that nvcc compiles the kernels of the
// different dtypes in parallel rather than in one translation unit of several minutes.
//
// The helpers sit in an unnamed namespace: each instantiating file keeps its own copy, and only
// the Launch members it instantiates are visible to the entry points (sampling_conv_cuda.cu).
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>

#include "../kernel_policy.h"
#include "common.cuh"
#include "fused_backward.cuh"
#include "fused_forward.cuh"
#include "hopper_forward.cuh"
#include "launch.h"
#include "simt_backward.cuh"

namespace d2bench {
namespace cuda {
namespace {

// One CTA per SM (no register cap, no spills) or two (capped at 128 registers, which spills a
// little but lets one CTA's gathers overlap the other's products). Two where the grid is a few
// waves long; one where the grid fits in one CTA per SM (a second slot per SM would stay empty)
// and, for the 16-bit tile, where it is many waves long (the finer waves of one-CTA slots lose
// less to the last, partial wave). A grid that would leave SMs idle gets tiles of half the rows.
// The measurements behind these rules: reports/bench/ops-notes.md, "Launcher choices".
template <typename scalar_t, typename Taps, template <typename, int, int> class TileT, int Rows>
void launch_fused(const at::Tensor& x, const Taps& taps, const at::Tensor& w_cl,
                  const at::Tensor& bias, at::Tensor& out) {
  const ConvShape& s = taps.shape;
  const Layout xl = Layout::of(x), ol = Layout::of(out);
  constexpr int64_t vec = 16 / sizeof(scalar_t);
  const bool vector_loads = xl.channel == 1 && s.group_channels() % vec == 0 &&
                            xl.voxel % vec == 0 && xl.batch % vec == 0 && is_aligned(x, 16);
  // Each (output channel, tap, group) run of channels starts 16-byte aligned.
  const bool vector_weights = s.group_channels() % vec == 0 && is_aligned(w_cl, 16);
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

// Which forward serves a 16-bit call: by default the Hopper kernel wherever it applies; the
// kernel policy's forward "mma" keeps the mma.sync kernel of fused_forward.cuh.
bool hopper_forward_wanted() { return kernel_policy().forward != ForwardKernel::mma; }

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
  const bool applies = xl.channel == 1 && xl.voxel % 8 == 0 && xl.batch % 8 == 0 &&
                       is_aligned(x, 16) && is_aligned(w_cl, 16) && s.group_channels() % T::BK == 0 &&
                       s.in_plane() < (int64_t(1) << 31) && 27 * s.channels < (int64_t(1) << 31);
  if (!applies) return false;
  const int64_t rows = s.batch * s.out_plane();
  const int64_t ctas = ceil_div(rows, T::BM) * ceil_div(s.out_channels, T::BN);
  CUtensorMap weight_map;
  if (!weight_tensor_map<scalar_t>(w_cl, weight_map)) return false;
  const auto kernel = &hopper_forward_kernel<scalar_t, Taps>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), T::SMEM_BYTES);
  // Two output channels per 32-bit store where the output is channels_last_3d.
  const bool pair_stores =
      ol.channel == 1 && ol.voxel % 2 == 0 && ol.batch % 2 == 0 && is_aligned(out, 4);
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

// One wave of CTAs after another over the GPU's slots, each wave as long as one CTA's work:
// the time of a grid in units of `work_per_cta`.
double grid_time(int64_t ctas, int64_t slots, double work_per_cta) {
  return static_cast<double>(ceil_div(ctas, std::max<int64_t>(slots, 1))) * work_per_cta;
}

// How many CTAs of `kernel` the GPU holds at once with `smem` bytes of dynamic shared memory:
// queried once per kernel and device (each backward call asks for several). The kernel's
// dynamic shared-memory limit is raised first: above 48 KiB the occupancy API would otherwise
// answer 0 CTAs, and the launchers would size their grids for one CTA per SM.
int64_t resident_ctas(const void* kernel, int threads, int smem) {
  allow_dynamic_smem(kernel, smem);
  static std::mutex guard;
  static std::map<std::tuple<const void*, int, int, int>, int64_t> known;
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const auto key = std::make_tuple(kernel, threads, smem, device);
  const std::lock_guard<std::mutex> lock(guard);
  const auto found = known.find(key);
  if (found != known.end()) return found->second;
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  const int64_t slots =
      std::max(per_sm, 1) *
      static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  known.emplace(key, slots);
  return slots;
}

// The cost per row of a 64-row tile relative to a 128-row one, for the wave model's choice of
// tile height. Weight gradient: a 64-channel tile does the same products with less reuse of each
// operand load. Input gradient: the 128-row tile spills registers, so 64 rows cost less per row.
// Measured per kernel with `d2bench bench tiles` (reports/bench/ops-notes.md, "Tile heights").
constexpr double kSmallWeightGradTileCost = 1.1;
constexpr double kSmallInputGradTileCost = 0.8;

// The CUDA-core backward's tile height forced by the kernel policy (64 or 128), or 0 to let the
// wave model choose: to measure both heights on a shape.
int forced_backward_rows() { return static_cast<int>(kernel_policy().backward_rows); }

template <typename scalar_t, typename Taps, int BM>
void launch_simt_weight_grad(const at::Tensor& x, const Taps& taps, const at::Tensor& gout,
                             at::Tensor& grad_weight, bool vector_loads, int64_t ctas) {
  const auto kernel = &simt_weight_grad_kernel<scalar_t, Taps, BM>;
  constexpr int smem = sizeof(SimtWeightGradSmem<scalar_t, BM>);
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
  kernel<<<static_cast<unsigned>(ctas), 256, smem, at::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<scalar_t>(), Layout::of(x), taps, gout.const_data_ptr<scalar_t>(),
      Layout::of(gout), grad_weight.data_ptr<scalar_t>(), vector_loads);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ∂L/∂W by simt_weight_grad_kernel: 128 input channels per CTA, or 64 where the larger tile
// would leave more of the GPU idle than the smaller one costs.
template <typename scalar_t, typename Taps>
void simt_weight_grad(const at::Tensor& x, const Taps& taps, const at::Tensor& gout,
                      at::Tensor& grad_weight) {
  const ConvShape& s = taps.shape;
  const Layout xl = Layout::of(x);
  constexpr int64_t vec = 16 / sizeof(scalar_t);
  const bool vector_loads = xl.channel == 1 && s.group_channels() % vec == 0 &&
                            xl.voxel % vec == 0 && xl.batch % vec == 0 && is_aligned(x, 16);
  const auto ctas = [&](int64_t bm) {
    return 27 * s.groups * ceil_div(s.group_channels(), bm) * ceil_div(s.out_channels, 128);
  };
  const int64_t slots_large = resident_ctas(
      reinterpret_cast<const void*>(&simt_weight_grad_kernel<scalar_t, Taps, 128>), 256,
      sizeof(SimtWeightGradSmem<scalar_t, 128>));
  const int64_t slots_small = resident_ctas(
      reinterpret_cast<const void*>(&simt_weight_grad_kernel<scalar_t, Taps, 64>), 256,
      sizeof(SimtWeightGradSmem<scalar_t, 64>));
  const int forced = forced_backward_rows();
  const double small_time = grid_time(ctas(64), slots_small, 64 * kSmallWeightGradTileCost);
  const bool small =
      forced != 0 ? forced == 64 : small_time < grid_time(ctas(128), slots_large, 128);
  if (small) {
    launch_simt_weight_grad<scalar_t, Taps, 64>(x, taps, gout, grad_weight, vector_loads,
                                                ctas(64));
  } else {
    launch_simt_weight_grad<scalar_t, Taps, 128>(x, taps, gout, grad_weight, vector_loads,
                                                 ctas(128));
  }
}

// The input-gradient grid: voxels per CTA and into how many shares the channel blocks split.
struct InputGradGrid {
  int rows_per_cta;
  int64_t tiles, shares;
};

// Picks the grid whose waves finish first. More than one share lets several CTAs add the same
// voxel's coordinate gradients (atomics), so only calls that already use atomics (the input
// gradient) and float/double maps may split.
template <typename scalar_t, typename Taps>
InputGradGrid input_grad_grid(const ConvShape& s, int64_t blocks, bool may_split) {
  const int64_t rows = s.batch * s.out_plane();
  const int64_t slots[2] = {
      resident_ctas(reinterpret_cast<const void*>(&simt_input_grad_kernel<scalar_t, Taps, 128>),
                    256, sizeof(SimtInputGradSmem<scalar_t, Taps, 128>)),
      resident_ctas(reinterpret_cast<const void*>(&simt_input_grad_kernel<scalar_t, Taps, 64>),
                    256, sizeof(SimtInputGradSmem<scalar_t, Taps, 64>))};
  InputGradGrid best{128, ceil_div(rows, 128), 1};
  double best_time = std::numeric_limits<double>::infinity();
  const int forced = forced_backward_rows();
  for (int small = 0; small < 2; ++small) {
    const int bm = small ? 64 : 128;
    if (forced != 0 && forced != bm) continue;
    const int64_t tiles = ceil_div(rows, bm);
    for (int64_t shares = 1; shares <= (may_split ? blocks : 1); ++shares) {
      const double row_cost = small ? kSmallInputGradTileCost : 1.0;
      const double work = bm * row_cost * ceil_div(blocks, shares);
      const double time = grid_time(tiles * shares, slots[small], work);
      if (time < best_time) best = {bm, tiles, shares}, best_time = time;
    }
  }
  return best;
}

template <typename scalar_t, typename Taps, int BM>
void launch_simt_input_grad(const at::Tensor& x, const Taps& taps, const at::Tensor& gout,
                            const at::Tensor& weight, int64_t c_begin, int64_t c_end,
                            const GradSink<coord_type<scalar_t>>& sink, bool coordinates,
                            bool x_vector4, const InputGradGrid& grid) {
  const auto kernel = &simt_input_grad_kernel<scalar_t, Taps, BM>;
  constexpr int smem = sizeof(SimtInputGradSmem<scalar_t, Taps, BM>);
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
  const dim3 blocks(static_cast<unsigned>(grid.tiles), static_cast<unsigned>(grid.shares));
  kernel<<<blocks, 256, smem, at::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<scalar_t>(), Layout::of(x), taps, gout.const_data_ptr<scalar_t>(),
      Layout::of(gout), weight.const_data_ptr<scalar_t>(), WeightLayout::of(weight), c_begin,
      c_end, sink, coordinates, x_vector4);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// grad_input's channels [c0, c0 + count) from the first `count` channels of a float32 block
// accumulator (N × T × H × W × block channels), converted to grad_input's dtype and layout.
void store_channel_block(const at::Tensor& block_acc, int64_t c0, int64_t count,
                         at::Tensor& grad_input) {
  grad_input.narrow(1, c0, count).copy_(block_acc.permute({0, 4, 1, 2, 3}).narrow(1, 0, count));
}

// Input channels per launch of the 16-bit CUDA-core backward: its float32 accumulator holds
// this many channels of every input voxel, kept within the output's size (down to 4 channels).
int64_t accumulator_channels(const ConvShape& s, int64_t element_bytes) {
  const int64_t output_bytes = s.batch * s.out_channels * s.out_plane() * element_bytes;
  const int64_t per_channel = s.batch * s.in_plane() * static_cast<int64_t>(sizeof(float));
  int64_t channels = 128;
  while (channels > 4 && channels * per_channel > output_bytes) channels /= 2;
  return std::min(channels, s.channels);
}

// The CUDA-core backward (simt_backward.cuh). float32/float64 add the input gradient straight
// into grad_input (zeroed) in one launch; 16-bit types add it into a float32 accumulator of a
// block of channels per launch, each block then converted into grad_input. The coordinate and
// modulation gradients must be zeroed: launches and channel shares add into them.
template <typename scalar_t, typename Taps>
void launch_simt_backward(const at::Tensor& gout, const at::Tensor& x, const Taps& taps,
                          const at::Tensor& weight, at::Tensor& grad_input,
                          at::Tensor& grad_weight, bool coordinates) {
  using acc_t = coord_type<scalar_t>;
  const ConvShape& s = taps.shape;
  const Layout xl = Layout::of(x);
  if (grad_weight.defined()) simt_weight_grad<scalar_t>(x, taps, gout, grad_weight);
  if (!grad_input.defined() && !coordinates) return;
  const int64_t cg = s.group_channels();
  const bool x_vector4 = sizeof(scalar_t) <= 4 && xl.channel == 1 && cg % 4 == 0 &&
                         xl.voxel % 4 == 0 && xl.batch % 4 == 0 &&
                         is_aligned(x, 4 * sizeof(scalar_t));
  // Four channels per float4 atomic where they are innermost and every run of four is aligned.
  const auto vector_sink = [&](const Layout& l, const at::Tensor& t) {
    return std::is_same_v<acc_t, float> && l.channel == 1 && cg % 4 == 0 && l.voxel % 4 == 0 &&
           l.batch % 4 == 0 && is_aligned(t, 16);
  };
  using map_t = typename Taps::map_type;
  constexpr bool atomic_maps = std::is_same_v<map_t, float> || std::is_same_v<map_t, double>;
  const int64_t per_launch =
      grad_input.defined() && kReducedPrecision<scalar_t>
          ? accumulator_channels(s, sizeof(scalar_t))
          : s.channels;
  at::Tensor block_acc;  // N × T × H × W × per_launch, float32 (16-bit types only)
  if (grad_input.defined() && kReducedPrecision<scalar_t>) {
    block_acc = at::empty({s.batch, s.depth, s.height, s.width, per_launch},
                          x.options().dtype(at::kFloat));
  }
  const bool launches = per_launch < s.channels;
  for (int64_t c0 = 0; c0 < s.channels; c0 += per_launch) {
    const int64_t c1 = std::min(s.channels, c0 + per_launch);
    GradSink<acc_t> sink{nullptr, Layout{0, 0, 0}, 0, false};
    if constexpr (kReducedPrecision<scalar_t>) {
      if (block_acc.defined()) {
        block_acc.zero_();
        const Layout block_layout{s.in_plane() * per_launch, 1, per_launch};
        sink = {block_acc.data_ptr<float>(), block_layout, c0,
                vector_sink(block_layout, block_acc)};
      }
    } else if (grad_input.defined()) {
      const Layout input_layout = Layout::of(grad_input);
      sink = {grad_input.data_ptr<acc_t>(), input_layout, 0,
              vector_sink(input_layout, grad_input)};
    }
    int64_t blocks = 0;  // blocks of 128 channels in [c0, c1), none straddling a group
    for (int64_t g = 0; g < s.groups; ++g) {
      const int64_t lo = std::max(g * cg, c0), hi = std::min((g + 1) * cg, c1);
      if (lo < hi) blocks += ceil_div(hi - lo, 128);
    }
    const InputGradGrid grid =
        input_grad_grid<scalar_t, Taps>(s, blocks, atomic_maps && grad_input.defined());
    Taps adding = taps;
    adding.store = grid.shares > 1 ? GradStore::atomic_add
                   : launches      ? GradStore::add
                                   : GradStore::write;
    if (grid.rows_per_cta == 64) {
      launch_simt_input_grad<scalar_t, Taps, 64>(x, adding, gout, weight, c0, c1, sink,
                                                 coordinates, x_vector4, grid);
    } else {
      launch_simt_input_grad<scalar_t, Taps, 128>(x, adding, gout, weight, c0, c1, sink,
                                                  coordinates, x_vector4, grid);
    }
    if (block_acc.defined()) store_channel_block(block_acc, c0, c1 - c0, grad_input);
  }
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

template <typename scalar_t, typename Taps, int CB>
void launch_weight_grad(const at::Tensor& x, Layout xl, const Taps& taps, const at::Tensor& gout,
                        Layout gl, at::Tensor& grad_weight) {
  using T = WeightGradTile<CB>;
  const ConvShape& s = taps.shape;
  const auto kernel = &weight_grad_kernel<scalar_t, Taps, CB>;
  constexpr int smem = sizeof(WeightGradSmem<typename MmaType<scalar_t>::type, CB>);
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
  const dim3 grid(static_cast<unsigned>(27 * s.groups * ceil_div(s.group_channels(), T::CB)),
                  static_cast<unsigned>(ceil_div(s.out_channels, T::BN)));
  kernel<<<grid, T::THREADS, smem, at::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<scalar_t>(), xl, taps, gout.const_data_ptr<scalar_t>(), gl,
      grad_weight.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Input channels per CTA of the tensor-core weight gradient: the policy's, else 64 wherever a
// group has more than 32 channels (64 measured as fast or faster at every layer of `bench ops`,
// by up to 31%: `d2bench bench wgrad`, reports/bench/ops-notes.md), else 32, which then leaves
// no half of the tile empty.
inline int weight_grad_channels(const ConvShape& s) {
  const int64_t forced = kernel_policy().weight_grad_channels;
  if (forced != 0) return static_cast<int>(forced);
  return s.group_channels() > 32 ? 64 : 32;
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
    if (weight_grad_channels(s) == 64) {
      launch_weight_grad<scalar_t, Taps, 64>(x, xl, taps, gout, gl, grad_weight);
    } else {
      launch_weight_grad<scalar_t, Taps, 32>(x, xl, taps, gout, gl, grad_weight);
    }
  }
  if (!grad_input.defined() && !coordinates) return;
  using T = InputGradTile;
  static_assert(T::CB == kTensorCoreAccumulatorChannels, "the entry points size the accumulator");
  // Read in channels_last_3d order, as the forward reads it; 16-byte aligned for cp.async.
  at::Tensor w_cl = weight.contiguous(at::MemoryFormat::ChannelsLast3d);
  if (!is_aligned(w_cl, 16)) {
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
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
  const int64_t tiles = ceil_div(s.batch * s.out_plane(), T::BM);
  // The taps of a voxel tile are split over several CTAs where the tiles alone would leave SMs
  // idle or the last wave mostly empty. The split CTAs then share the coordinate gradients of
  // their voxels (atomics, float/double maps only); the input gradient already uses atomics, so
  // a call without it keeps one CTA per tile and stays deterministic.
  using map_t = typename Taps::map_type;
  constexpr bool atomic_maps = std::is_same_v<map_t, float> || std::is_same_v<map_t, double>;
  int split = 1;
  if (atomic_maps && grad_input.defined()) {
    split = tap_split(tiles, resident_ctas(reinterpret_cast<const void*>(kernel), T::THREADS, smem));
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
      if (block_acc.defined()) store_channel_block(block_acc, cb0, count, grad_input);
    }
  }
}

}  // namespace

template <typename scalar_t, typename Taps>
void Launch<scalar_t, Taps>::forward(const at::Tensor& x, const Taps& taps,
                                     const at::Tensor& weight, const at::Tensor& bias,
                                     at::Tensor& out) {
  launch_forward<scalar_t>(x, taps, weight, bias, out);
}

template <typename scalar_t, typename Taps>
void Launch<scalar_t, Taps>::tensor_core_backward(const at::Tensor& gout, const at::Tensor& x,
                                                  const Taps& taps, const at::Tensor& weight,
                                                  at::Tensor& grad_input,
                                                  at::Tensor& grad_weight, bool coordinates) {
  if constexpr (kReducedPrecision<scalar_t>) {
    launch_fused_backward<scalar_t>(gout, x, taps, weight, grad_input, grad_weight, coordinates);
  } else {
    TORCH_CHECK(false, "the tensor-core backward takes float16 and bfloat16 only");
  }
}

template <typename scalar_t, typename Taps>
void Launch<scalar_t, Taps>::cuda_core_backward(const at::Tensor& gout, const at::Tensor& x,
                                                const Taps& taps, const at::Tensor& weight,
                                                at::Tensor& grad_input, at::Tensor& grad_weight,
                                                bool coordinates) {
  launch_simt_backward<scalar_t>(gout, x, taps, weight, grad_input, grad_weight, coordinates);
}

}  // namespace cuda
}  // namespace d2bench
