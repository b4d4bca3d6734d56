// Fused backward of both operators for float16/bfloat16 (tensor cores, float32 accumulation):
// two implicit GEMMs whose sampled operand lives only in shared memory, so the backward needs no
// column buffer.
//
//   ∂L/∂W[o, k, c]  = Σ_r gout[r, o] · A[r, (k, c)]          weight_grad_kernel
//   ∂L/∂A[r, (k, c)] = Σ_o gout[r, o] · W[o, k, c]           input_grad_kernel, which spreads it
//                                                            over the input and the coordinates
//
// weight_grad_kernel: one CTA per (group, tap, block of CB channels, block of 256 output
// channels) reduces over every output voxel; it owns its block of ∂L/∂W, so there are no atomics
// (deterministic) and no float32 buffer. input_grad_kernel: one CTA per 64 output voxels and a
// share of the 27 taps (gridDim.y shares), one launch per block of CB input channels; per tap it
// forms ∂L/∂A for its voxels in shared memory, adds it into a float32 accumulator of that channel
// block (atomics: the samples of different voxels share corners) and reduces the coordinate and
// modulation gradients over the block's channels, adding them to their outputs (one launch after
// another; atomically where a voxel's taps are split over CTAs).
#pragma once

#include <type_traits>

#include "common.cuh"
#include "fused_forward.cuh"
#include "mma.cuh"

namespace d2bench {
namespace cuda {

// ---- ∂L/∂W ----

// CB_ input channels per CTA: 32 make enough CTAs for two per SM at the paper's 256-channel
// layers (27 · 8 = 216); 64 read each voxel's ∂L/∂out and compute its corners half as often
// (every CTA reads all of ∂L/∂out), with half the CTAs. The launcher (or the kernel policy's
// weight_grad_channels) picks one.
template <int CB_>
struct WeightGradTile {
  // M = CB input channels, N = BN output channels, K = BK output voxels per step; corners are
  // computed for PB voxels at a time. 8 warps side by side over N, CB × 32 each.
  static constexpr int CB = CB_, BN = 256, BK = 64, PB = 128, THREADS = 256;
  static constexpr int WARPS_N = 8, WARP_M = CB, WARP_N = 32;
  static constexpr int TILES_M = WARP_M / 16, TILES_N = WARP_N / 8;
  static constexpr int LDA = CB + 8, LDB = BN + 8;  // conflict-free ldmatrix rows
  static_assert(CB == 32 || CB == 64, "32 or 64 input channels per CTA");
};

// Shared memory of weight_grad_kernel (dynamic: over 48 KiB): the sampled columns as
// [voxel][channel] and ∂L/∂out as [voxel][output channel], both read with ldmatrix.trans. One
// ∂L/∂out buffer, filled during the gather (a second one was slower: reports/bench/ops-notes.md).
template <typename mma_t, int CB>
struct WeightGradSmem {
  using T = WeightGradTile<CB>;
  alignas(16) mma_t a[T::BK][T::LDA];
  alignas(16) mma_t b[T::BK][T::LDB];
  RowCorners<float> corners[T::PB];
  unsigned live;
};

// Writes gathered column values into WeightGradSmem::a (row = voxel, kk = channel).
template <typename scalar_t, int CB>
struct WeightGradColumnStore {
  WeightGradSmem<typename MmaType<scalar_t>::type, CB>& sm;
  __device__ void operator()(int m, int kk, float v) const {
    sm.a[m][kk] = MmaType<scalar_t>::from_float(v);
  }
  __device__ void vector(int m, int kk0, const float* v) const {
    uint32_t words[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) words[e] = MmaType<scalar_t>::pack(v[2 * e], v[2 * e + 1]);
    *reinterpret_cast<uint4*>(&sm.a[m][kk0]) = make_uint4(words[0], words[1], words[2], words[3]);
  }
};

// tile[kk][nn] = gout[row r0 + kk, channel o0 + nn] (0 outside), for BK_ rows and BN_ channels,
// by cp.async: the caller commits and waits. ∂L/∂out is channels_last_3d here
// (fused_backward_applies), so row r's channels start at r·C_out: no division into (sample,
// voxel).
template <int BK_, int BN_, int LD, typename scalar_t, typename mma_t>
__device__ __forceinline__ void load_gout_tile(mma_t (*tile)[LD],
                                               const scalar_t* __restrict__ gout, Layout gl,
                                               const ConvShape& s, int64_t r0, int64_t o0) {
  const int64_t rows = s.batch * s.out_plane();
  constexpr int THREADS = 256, VEC = 8, PER_ROW = BN_ / VEC;
  for (int item = threadIdx.x; item < BK_ * PER_ROW; item += THREADS) {
    const int kk = item / PER_ROW, nn0 = (item % PER_ROW) * VEC;
    const int64_t r = r0 + kk;
    const bool valid = r < rows && o0 + nn0 < s.out_channels;
    cp_async16(&tile[kk][nn0], valid ? gout + r * gl.voxel + o0 + nn0 : gout, valid);
  }
}

template <typename scalar_t, typename Taps, int CB>
__global__ void __launch_bounds__(WeightGradTile<CB>::THREADS, 2)
    weight_grad_kernel(const scalar_t* __restrict__ x, Layout xl, const Taps taps,
                       const scalar_t* __restrict__ gout, Layout gl, scalar_t* __restrict__ gw) {
  using T = WeightGradTile<CB>;
  using mma_t = typename MmaType<scalar_t>::type;
  extern __shared__ uint4 dynamic_smem[];
  auto& sm = *reinterpret_cast<WeightGradSmem<mma_t, CB>*>(dynamic_smem);
  const ConvShape& s = taps.shape;
  const int64_t cg = s.group_channels(), blocks_per_group = (cg + T::CB - 1) / T::CB;
  const int k = static_cast<int>(blockIdx.x % 27);
  const int64_t block = blockIdx.x / 27;
  const int64_t g = block / blocks_per_group, c0 = (block % blocks_per_group) * T::CB;
  const int64_t c_first = g * cg + c0, o0 = static_cast<int64_t>(blockIdx.y) * T::BN;
  const int valid_c = static_cast<int>(cg - c0 < T::CB ? cg - c0 : T::CB);
  const int64_t rows = s.batch * s.out_plane();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int m0 = (warp / T::WARPS_N) * T::WARP_M, n0 = (warp % T::WARPS_N) * T::WARP_N;
  float acc[T::TILES_M][T::TILES_N][4];
#pragma unroll
  for (int i = 0; i < T::TILES_M; ++i)
#pragma unroll
    for (int j = 0; j < T::TILES_N; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
  const WeightGradColumnStore<scalar_t, CB> store_a{sm};
  for (int64_t r0 = 0; r0 < rows; r0 += T::PB) {
    if (threadIdx.x == 0) sm.live = 0;
    __syncthreads();
    compute_row_corners<T::PB>(taps, xl, r0, g, k, sm.corners, &sm.live);
    __syncthreads();
    const LiveCorners live_corners = LiveCorners::of(sm.live);
    for (int rs = 0; rs < T::PB && r0 + rs < rows; rs += T::BK) {
      // ∂L/∂out of the step's voxels arrives by cp.async while the columns are gathered.
      load_gout_tile<T::BK, T::BN, T::LDB>(sm.b, gout, gl, s, r0 + rs, o0);
      cp_async_commit();
      // Columns: BK voxels × CB channels, the same gather as the forward's A tile.
      gather_live_tile<scalar_t, T::BK, T::CB, T::THREADS>(sm.corners + rs, live_corners, x, xl,
                                                           c_first, valid_c, true, store_a);
      cp_async_wait_all();
      __syncthreads();
#pragma unroll
      for (int ks = 0; ks < T::BK; ks += 16) {
        uint32_t a[T::TILES_M][4];  // A[m = channel][k = voxel] from the [voxel][channel] tile
#pragma unroll
        for (int i = 0; i < T::TILES_M; ++i) {
          ldmatrix_x4_trans(
              a[i], &sm.a[ks + (lane >> 4) * 8 + (lane & 7)][m0 + i * 16 + ((lane >> 3) & 1) * 8]);
        }
        mma_row_major_b(acc, a, sm.b, ks, n0, lane);
      }
      __syncthreads();
    }
  }
  // ∂L/∂W in the weight's standard layout: W[o, c, k] at (o·C + c)·27 + k.
#pragma unroll
  for (int i = 0; i < T::TILES_M; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int cc = m0 + i * 16 + h * 8 + lane / 4;
      if (cc >= valid_c) continue;
#pragma unroll
      for (int j = 0; j < T::TILES_N; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t o = o0 + n0 + j * 8 + 2 * (lane % 4) + e;
          if (o >= s.out_channels) continue;
          gw[(o * s.channels + c_first + cc) * 27 + k] =
              static_cast<scalar_t>(acc[i][j][2 * h + e]);
        }
      }
    }
  }
}

// ---- ∂L/∂input, ∂L/∂coordinates, ∂L/∂modulation ----

struct InputGradTile {
  // M = BM output voxels, N = CB input channels of one launch's block, K = the output channels,
  // ON at a time (all of them at the paper's layers: ∂L/∂out of the CTA's voxels then stays in
  // shared memory for all 27 taps). 8 warps as 2 × 4 of 32 × 16. In the spreading step a
  // half-warp takes one voxel, four channels per lane.
  static constexpr int BM = 64, CB = 64, ON = 256, THREADS = 256;
  static constexpr int WARPS_N = 4, WARP_M = 32, WARP_N = 16;
  static constexpr int TILES_M = WARP_M / 16, TILES_N = WARP_N / 8;
  static constexpr int LDA = ON + 8, LDB = CB + 8, LDG = CB + 4;
};

// One voxel's sample at the current tap, as the spreading step needs it.
struct TapSample {
  Corners<float> corners;  // index: the corner's voxel within its sample
  float dw[8][3];          // ∂(corner weight)/∂(t, y, x)
  float modulation;
};

// Shared memory of input_grad_kernel (dynamic: over 48 KiB).
template <typename mma_t, typename Voxel>
struct InputGradSmem {
  alignas(16) mma_t a[InputGradTile::BM][InputGradTile::LDA];  // ∂L/∂out, [voxel][out channel]
  alignas(16) mma_t b[InputGradTile::ON][InputGradTile::LDB];  // W, [out channel][in channel]
  alignas(16) float gcol[InputGradTile::BM][InputGradTile::LDG];  // ∂L/∂A of the tap
  TapSample samples[InputGradTile::BM];
  Voxel voxels[InputGradTile::BM];  // read once per CTA, for all taps
};

// W[o0 + kk, k, cb0 + nn] for kk < ON, nn < CB into sm.b by cp.async (zeros out of range).
template <typename scalar_t, typename Smem>
__device__ __forceinline__ void copy_weight_block(Smem& sm,
                                                  const scalar_t* __restrict__ w_cl,
                                                  const ConvShape& s, int k, int64_t o0,
                                                  int64_t cb0, int valid_c) {
  using T = InputGradTile;
  constexpr int PER_ROW = T::CB / 8;
  const int64_t w_row = 27 * s.channels;
  for (int item = threadIdx.x; item < T::ON * PER_ROW; item += T::THREADS) {
    const int kk = item / PER_ROW, nn0 = (item % PER_ROW) * 8;
    const int64_t o = o0 + kk;
    const bool valid = o < s.out_channels && nn0 < valid_c;
    const scalar_t* src = valid ? w_cl + o * w_row + static_cast<int64_t>(k) * s.channels + cb0 + nn0
                                : w_cl;
    cp_async16(&sm.b[kk][nn0], src, valid);
  }
  cp_async_commit();
}

// ∂L/∂x for channels cb0 .. cb0 + CB − 1 accumulates in `gx`, a float32 tensor of CB channels,
// channels innermost: element (n, c − cb0, voxel v) at (n·in_plane + v)·CB + c − cb0.
template <typename scalar_t, typename Taps>
__global__ void __launch_bounds__(InputGradTile::THREADS, 2)
    input_grad_kernel(const scalar_t* __restrict__ x, Layout xl, const Taps taps,
                      const scalar_t* __restrict__ gout, Layout gl,
                      const scalar_t* __restrict__ w_cl, int64_t cb0, float* __restrict__ gx,
                      bool coordinates) {
  using T = InputGradTile;
  using mma_t = typename MmaType<scalar_t>::type;
  static_assert(sizeof(scalar_t) == 2, "the fused backward serves float16 and bfloat16");
  extern __shared__ uint4 dynamic_smem[];
  auto& sm = *reinterpret_cast<InputGradSmem<mma_t, typename Taps::Voxel>*>(dynamic_smem);
  const ConvShape& s = taps.shape;
  const int64_t cg = s.group_channels(), g = cb0 / cg;
  const int valid_c = static_cast<int>((g + 1) * cg - cb0 < T::CB ? (g + 1) * cg - cb0 : T::CB);
  const int64_t rows = s.batch * s.out_plane(), row0 = static_cast<int64_t>(blockIdx.x) * T::BM;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int m0 = (warp / T::WARPS_N) * T::WARP_M, n0 = (warp % T::WARPS_N) * T::WARP_N;
  // Spreading: half-warp h of warp `warp` takes voxels warp·8 + 2·i + h, i = 0..3.
  const int half = lane / 16, hl = lane % 16, c_local = 4 * hl;
  const bool want_mask = taps.grad_mask != nullptr;
  // With all output channels resident, ∂L/∂out is loaded once and the next tap's weights are
  // copied while this tap's gradient is spread.
  const bool resident = s.out_channels <= T::ON;
  // This CTA's share of the taps: gridDim.y shares of 27 (several when voxel tiles are few).
  const int k_begin = static_cast<int>(blockIdx.y * 27 / gridDim.y);
  const int k_end = static_cast<int>((blockIdx.y + 1) * 27 / gridDim.y);
  typename Taps::GradAcc grad_acc[4];
  const int valid_rows = static_cast<int>(rows - row0 < T::BM ? rows - row0 : T::BM);
  if (threadIdx.x < valid_rows) {
    const int64_t r = row0 + threadIdx.x, n = r / s.out_plane();
    sm.voxels[threadIdx.x] = taps.voxel(n, r - n * s.out_plane());
  }
  __syncthreads();
  if (resident) {
    load_gout_tile<T::BM, T::ON, T::LDA>(sm.a, gout, gl, s, row0, 0);
    copy_weight_block(sm, w_cl, s, k_begin, 0, cb0, valid_c);
  }
  for (int k = k_begin; k < k_end; ++k) {
    if (threadIdx.x < T::BM) {
      TapSample& out = sm.samples[threadIdx.x];
      out.corners.inside = 0;
      if (threadIdx.x < valid_rows) {
        const auto& v = sm.voxels[threadIdx.x];
        const auto c = taps.coord(v, g, k);
        trilinear_corners(c.v[0], c.v[1], c.v[2], s.depth, s.height, s.width, out.corners);
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          corner_weight_grad(q, out.corners.frac[0], out.corners.frac[1], out.corners.frac[2],
                             out.dw[q]);
        }
        out.modulation = taps.modulation(v, g, k);
      }
    }
    float acc[T::TILES_M][T::TILES_N][4];
#pragma unroll
    for (int i = 0; i < T::TILES_M; ++i)
#pragma unroll
      for (int j = 0; j < T::TILES_N; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
    for (int64_t o0 = 0; o0 < s.out_channels; o0 += T::ON) {
      if (!resident) {
        load_gout_tile<T::BM, T::ON, T::LDA>(sm.a, gout, gl, s, row0, o0);
        copy_weight_block(sm, w_cl, s, k, o0, cb0, valid_c);
      }
      cp_async_wait_all();
      __syncthreads();
      const int k_end = static_cast<int>(
          (s.out_channels - o0 < T::ON ? s.out_channels - o0 : T::ON) + 15) / 16 * 16;
      for (int ks = 0; ks < k_end; ks += 16) {
        uint32_t a[T::TILES_M][4];
#pragma unroll
        for (int i = 0; i < T::TILES_M; ++i) {
          ldmatrix_x4(a[i], &sm.a[m0 + i * 16 + (lane & 15)][ks + (lane >> 4) * 8]);
        }
        mma_row_major_b(acc, a, sm.b, ks, n0, lane);
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < T::TILES_M; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int j = 0; j < T::TILES_N; ++j) {
          float* dst = &sm.gcol[m0 + i * 16 + h * 8 + lane / 4][n0 + j * 8 + 2 * (lane % 4)];
          dst[0] = acc[i][j][2 * h];
          dst[1] = acc[i][j][2 * h + 1];
        }
    __syncthreads();
    if (resident && k + 1 < k_end) copy_weight_block(sm, w_cl, s, k + 1, 0, cb0, valid_c);
    // Spread ∂L/∂A of each voxel over its corners and reduce the coordinate gradient.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int m = warp * 8 + 2 * i + half;
      const TapSample& smp = sm.samples[m];
      float gc[3] = {0.0f, 0.0f, 0.0f}, gm = 0.0f;
      if (smp.corners.inside != 0 && c_local < valid_c) {
        const Corners<float>& cr = smp.corners;
        const float mf = smp.modulation;
        const float4 g4 = *reinterpret_cast<const float4*>(&sm.gcol[m][c_local]);
        const float gv[4] = {g4.x, g4.y, g4.z, g4.w};
        const int64_t n = sm.voxels[m].n;
        const int64_t xbase = n * xl.batch + cb0 + c_local;
        const int64_t gbase = n * s.in_plane() * T::CB + c_local;
        // The eight corners' inputs are loaded first, all in flight at once (a corner outside
        // has index 0, an address inside the tensor; its value is not used).
        uint2 raw[8];
        if (coordinates) {
#pragma unroll
          for (int q = 0; q < 8; ++q) {
            raw[q] = __ldg(reinterpret_cast<const uint2*>(x + xbase + cr.index[q] * xl.voxel));
          }
        }
        if (gx) {
#pragma unroll
          for (int q = 0; q < 8; ++q) {
            if (!(cr.inside & (1u << q)) || cr.weight[q] == 0.0f) continue;
            const float wq = cr.weight[q] * mf;
            atomic_add4(gx + gbase + cr.index[q] * T::CB, wq * gv[0], wq * gv[1], wq * gv[2],
                        wq * gv[3]);
          }
        }
        if (coordinates) {
#pragma unroll
          for (int q = 0; q < 8; ++q) {
            if (!(cr.inside & (1u << q))) continue;
            float v[4];
            scalar_t* tag = nullptr;
            unpack_word(raw[q].x, tag, v);
            unpack_word(raw[q].y, tag, v + 2);
            const float dot = gv[0] * v[0] + gv[1] * v[1] + gv[2] * v[2] + gv[3] * v[3];
            if (want_mask) gm += cr.weight[q] * dot;
#pragma unroll
            for (int a = 0; a < 3; ++a) gc[a] += smp.dw[q][a] * dot;
          }
        }
#pragma unroll
        for (int a = 0; a < 3; ++a) gc[a] *= mf;
      }
      if (coordinates) {
#pragma unroll
        for (int offset = 8; offset > 0; offset /= 2) {
#pragma unroll
          for (int a = 0; a < 3; ++a) gc[a] += __shfl_xor_sync(0xffffffffu, gc[a], offset);
          gm += __shfl_xor_sync(0xffffffffu, gm, offset);
        }
        if (hl == 0 && m < valid_rows) taps.add_tap_grad(grad_acc[i], sm.voxels[m], g, k, gc, gm);
      }
    }
    __syncthreads();  // samples and gcol are rewritten for the next tap
  }
  if (coordinates && hl == 0) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int m = warp * 8 + 2 * i + half;
      if (m < valid_rows) taps.finish_grad(grad_acc[i], sm.voxels[m]);
    }
  }
}

}  // namespace cuda
}  // namespace d2bench
