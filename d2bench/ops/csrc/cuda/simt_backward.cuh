// Column-free backward of both operators on CUDA cores: float32 (strict, no TF32), float64, and
// the float16/bfloat16 calls the tensor-core backward (fused_backward.cuh) does not take. The
// same two implicit GEMMs, their products in acc_t (float32; float64 for float64) from
// shared-memory tiles, so no column buffer ever exists in device memory:
//
//   ∂L/∂W[o, c, k]   = Σ_r gout[r, o] · A[r, (k, c)]      simt_weight_grad_kernel
//   ∂L/∂A[r, (k, c)] = Σ_o gout[r, o] · W[o, c, k]        simt_input_grad_kernel, which spreads
//                                                         it over the input and the coordinates
//
// simt_weight_grad_kernel: one CTA per (tap, block of BM input channels, block of 128 output
// channels) reduces over every output voxel, gathering A per step as the forward does; it owns
// its block of ∂L/∂W (no atomics, deterministic). simt_input_grad_kernel: one CTA per BM output
// voxels and a share of the input-channel blocks; per tap and block it forms ∂L/∂A in registers,
// adds it into the input gradient's accumulator at the 8 corners (float atomics: the samples of
// different voxels share corners) and reduces the coordinate and modulation gradients over the
// CTA's channels before folding them into their outputs once per tap.
//
// Extra memory: none for float32/float64 (the input gradient accumulates in place); for 16-bit
// types a float32 accumulator of a block of input channels, sized by the launcher.
#pragma once

#include <type_traits>

#include "common.cuh"
#include "fused_forward.cuh"

namespace d2bench {
namespace cuda {

// Strides of a 3×3×3 weight (O, C, kt, kh, kw) in any layout: read without a re-laid-out copy.
struct WeightLayout {
  int64_t out, channel, t, h, w;

  static WeightLayout of(const at::Tensor& weight) {
    return WeightLayout{weight.stride(0), weight.stride(1), weight.stride(2), weight.stride(3),
                        weight.stride(4)};
  }
  __device__ int64_t tap(int k) const { return (k / 9) * t + ((k / 3) % 3) * h + (k % 3) * w; }
};

// Four consecutive shared-memory values (16-byte aligned) in one or two vector accesses.
__device__ __forceinline__ void smem_read4(const float* p, float* v) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}
__device__ __forceinline__ void smem_read4(const double* p, double* v) {
  const double2 lo = *reinterpret_cast<const double2*>(p);
  const double2 hi = *reinterpret_cast<const double2*>(p + 2);
  v[0] = lo.x, v[1] = lo.y, v[2] = hi.x, v[3] = hi.y;
}
__device__ __forceinline__ void smem_write4(float* p, const float* v) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void smem_write4(double* p, const double* v) {
  reinterpret_cast<double2*>(p)[0] = make_double2(v[0], v[1]);
  reinterpret_cast<double2*>(p)[1] = make_double2(v[2], v[3]);
}

// An M × 128 product over K in BK steps, from a[BK][LDA] (M innermost) and b[BK][LDB] (N
// innermost) in shared memory. 16 × 16 threads, each TM × 8: rows ty·TM.., and columns in two
// groups of four, 4·tx and 64 + 4·tx, so a half-warp's 16-byte reads of a b row are contiguous.
// M is input channels (weight gradient) or output voxels (input gradient).
template <typename scalar_t, int BM_>
struct SimtGradTile {
  using acc_t = coord_type<scalar_t>;
  static constexpr int BM = BM_, BN = 128, BK = sizeof(acc_t) == 4 ? 32 : 16, THREADS = 256;
  static constexpr int TM = BM / 16, TN = BN / 16;
  static constexpr int LDA = BM + 4, LDB = BN + 4;  // rows stay 16-byte aligned
  static_assert(TM % 4 == 0 && TN == 8, "vector reads of four values");
  struct Operands {
    alignas(16) acc_t a[BK][LDA];
    alignas(16) acc_t b[BK][LDB];
  };
  using Acc = acc_t[TM][TN];

  __device__ static int column(int tx, int j) { return (j / 4) * (BN / 2) + tx * 4 + j % 4; }
  __device__ static void zero(Acc& acc) {
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = acc_t(0);
  }
  __device__ static void multiply(const Operands& op, Acc& acc) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll 8
    for (int kk = 0; kk < BK; ++kk) {
      acc_t a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; i += 4) smem_read4(&op.a[kk][ty * TM + i], a + i);
      smem_read4(&op.b[kk][tx * 4], b);
      smem_read4(&op.b[kk][BN / 2 + tx * 4], b + 4);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
    }
  }
};

// CTAs per SM the register allocation must allow: two (at most 128 registers) for float32 and
// 16-bit types; one for float64 (gradcheck), whose double accumulators would spill heavily.
template <typename scalar_t>
constexpr int kSimtGradMinBlocks = sizeof(coord_type<scalar_t>) == 8 ? 1 : 2;

// ---- ∂L/∂W ----

template <typename scalar_t, int BM>
struct SimtWeightGradSmem {
  typename SimtGradTile<scalar_t, BM>::Operands op;
  RowCorners<coord_type<scalar_t>> corners[BM];  // BM output voxels at a time
  int64_t gout_row[BM];  // offset of the voxel's ∂L/∂out (channel 0); −1 past the last voxel
  unsigned live;
};

// The gathered columns as a[voxel][input channel] (the product's K is the voxels here).
template <typename scalar_t, int BM>
struct VoxelMajorColumns {
  using Tile = SimtGradTile<scalar_t, BM>;
  using acc_t = typename Tile::acc_t;
  typename Tile::Operands& op;

  __device__ void operator()(int m, int kk, acc_t v) const { op.a[m][kk] = v; }
  __device__ void vector(int m, int kk0, const acc_t* v) const {
    constexpr int VEC = 16 / sizeof(scalar_t);
    if constexpr (VEC % 4 == 0) {
#pragma unroll
      for (int e = 0; e < VEC; e += 4) smem_write4(&op.a[m][kk0 + e], v + e);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) op.a[m][kk0 + e] = v[e];
    }
  }
};

// Grid: 27 · groups · ⌈C_g / BM⌉ · ⌈C_out / 128⌉ CTAs, the output-channel block fastest (the
// CTAs that gather the same columns run side by side). ∂L/∂W is written in the standard layout.
template <typename scalar_t, typename Taps, int BM>
__global__ void __launch_bounds__(256, kSimtGradMinBlocks<scalar_t>)
    simt_weight_grad_kernel(const scalar_t* __restrict__ x, Layout xl, const Taps taps,
                            const scalar_t* __restrict__ gout, Layout gl,
                            scalar_t* __restrict__ gw, bool vector_loads) {
  using T = SimtGradTile<scalar_t, BM>;
  using acc_t = typename T::acc_t;
  extern __shared__ uint4 dynamic_smem[];
  auto& sm = *reinterpret_cast<SimtWeightGradSmem<scalar_t, BM>*>(dynamic_smem);
  const ConvShape& s = taps.shape;
  const int64_t cg = s.group_channels(), per_group = (cg + BM - 1) / BM;
  const int64_t out_blocks = (s.out_channels + T::BN - 1) / T::BN;
  const int64_t o0 = static_cast<int64_t>(blockIdx.x) % out_blocks * T::BN;
  const int64_t rest = static_cast<int64_t>(blockIdx.x) / out_blocks;
  const int k = static_cast<int>(rest % 27);
  const int64_t block = rest / 27, g = block / per_group, c0 = block % per_group * BM;
  const int64_t c_first = g * cg + c0;
  const int valid_c = static_cast<int>(cg - c0 < BM ? cg - c0 : BM);
  const int64_t rows = s.batch * s.out_plane();
  typename T::Acc acc;
  T::zero(acc);
  const VoxelMajorColumns<scalar_t, BM> store{sm.op};
  for (int64_t r0 = 0; r0 < rows; r0 += BM) {
    if (threadIdx.x == 0) sm.live = 0;
    __syncthreads();  // the previous voxels' corners and tiles are no longer read
    compute_row_corners<BM>(taps, xl, r0, g, k, sm.corners, &sm.live);
    if (threadIdx.x < BM) {
      const int64_t r = r0 + threadIdx.x, n = r / s.out_plane();
      sm.gout_row[threadIdx.x] = r < rows ? n * gl.batch + (r - n * s.out_plane()) * gl.voxel : -1;
    }
    __syncthreads();
    const LiveCorners live = LiveCorners::of(sm.live);
    for (int rs = 0; rs < BM && r0 + rs < rows; rs += T::BK) {
      // b[kk][n] = ∂L/∂out of voxel rs + kk, output channel o0 + n; neighbouring threads take
      // neighbouring addresses in either layout.
      for (int item = threadIdx.x; item < T::BK * T::BN; item += T::THREADS) {
        const bool channel_fast = gl.channel == 1;
        const int kk = channel_fast ? item / T::BN : item % T::BK;
        const int nn = channel_fast ? item % T::BN : item / T::BK;
        const int64_t row = sm.gout_row[rs + kk], o = o0 + nn;
        sm.op.b[kk][nn] = row >= 0 && o < s.out_channels
                              ? static_cast<acc_t>(gout[row + o * gl.channel])
                              : acc_t(0);
      }
      gather_live_tile<scalar_t, T::BK, BM, T::THREADS>(sm.corners + rs, live, x, xl, c_first,
                                                        valid_c, vector_loads, store);
      __syncthreads();
      T::multiply(sm.op, acc);
      __syncthreads();
    }
  }
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
  for (int i = 0; i < T::TM; ++i) {
    const int cc = ty * T::TM + i;
    if (cc >= valid_c) continue;
#pragma unroll
    for (int j = 0; j < T::TN; ++j) {
      const int64_t o = o0 + T::column(tx, j);
      if (o < s.out_channels) {
        gw[(o * s.channels + c_first + cc) * 27 + k] = static_cast<scalar_t>(acc[i][j]);
      }
    }
  }
}

// ---- ∂L/∂input, ∂L/∂coordinates, ∂L/∂modulation ----

// One voxel's sample at the current tap.
template <typename acc_t>
struct GradSample {
  int64_t index[8];  // the corner's voxel within its sample (0 outside)
  acc_t weight[8];   // trilinear weight (0 outside), without the modulation
  acc_t frac[3];
  acc_t modulation;
  unsigned inside;  // bit q: corner q lies in the volume
};

// Where the input gradient accumulates: element (n, c, voxel v) at
// n·layout.batch + (c − c0)·layout.channel + v·layout.voxel. vector4: four channels per float4
// atomic (channels innermost, aligned).
template <typename acc_t>
struct GradSink {
  acc_t* data;
  Layout layout;
  int64_t c0;
  bool vector4;
};

template <typename scalar_t, typename Taps, int BM>
struct SimtInputGradSmem {
  using acc_t = coord_type<scalar_t>;
  typename SimtGradTile<scalar_t, BM>::Operands op;
  GradSample<acc_t> samples[BM];
  typename Taps::Voxel voxels[BM];  // read once per CTA
  typename Taps::GradAcc grad_acc[BM];
  acc_t tap_grad[BM][4];  // this tap's ∂L/∂coordinate (3) and ∂L/∂modulation, over the channels
};

// Grid: ⌈N·P / BM⌉ × shares. The launch covers input channels [c_begin, c_end), in blocks of 128
// that never straddle an offset group; CTA y takes the y-th share of those blocks.
template <typename scalar_t, typename Taps, int BM>
__global__ void __launch_bounds__(256, kSimtGradMinBlocks<scalar_t>)
    simt_input_grad_kernel(const scalar_t* __restrict__ x, Layout xl, const Taps taps,
                           const scalar_t* __restrict__ gout, Layout gl,
                           const scalar_t* __restrict__ w, WeightLayout wl, int64_t c_begin,
                           int64_t c_end, GradSink<coord_type<scalar_t>> gx, bool coordinates,
                           bool x_vector4) {
  using T = SimtGradTile<scalar_t, BM>;
  using acc_t = typename T::acc_t;
  extern __shared__ uint4 dynamic_smem[];
  auto& sm = *reinterpret_cast<SimtInputGradSmem<scalar_t, Taps, BM>*>(dynamic_smem);
  const ConvShape& s = taps.shape;
  const int64_t cg = s.group_channels(), rows = s.batch * s.out_plane();
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int valid_rows = static_cast<int>(rows - row0 < BM ? rows - row0 : BM);
  const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
  const bool want_mask = taps.grad_mask != nullptr;
  if (threadIdx.x < valid_rows) {
    const int64_t r = row0 + threadIdx.x, n = r / s.out_plane();
    sm.voxels[threadIdx.x] = taps.voxel(n, r - n * s.out_plane());
    sm.grad_acc[threadIdx.x] = typename Taps::GradAcc{};
  }
  // This CTA's share of the launch's channel blocks, counted over the groups in order.
  const auto group_range = [&](int64_t g, int64_t& lo, int64_t& hi) {
    lo = g * cg > c_begin ? g * cg : c_begin;
    hi = (g + 1) * cg < c_end ? (g + 1) * cg : c_end;
    return lo < hi ? (hi - lo + T::BN - 1) / T::BN : int64_t(0);
  };
  int64_t blocks = 0;
  for (int64_t g = 0; g < s.groups; ++g) {
    int64_t lo, hi;
    blocks += group_range(g, lo, hi);
  }
  const int64_t share_begin = blockIdx.y * blocks / gridDim.y;
  const int64_t share_end = (blockIdx.y + 1) * blocks / gridDim.y;
  int64_t first = 0;  // index of group g's first block
  for (int64_t g = 0; g < s.groups; ++g) {
    int64_t lo, hi;
    const int64_t count = group_range(g, lo, hi);
    const int64_t b_begin = first > share_begin ? first : share_begin;
    const int64_t b_end = first + count < share_end ? first + count : share_end;
    const int64_t group_first = first;
    first += count;
    if (b_begin >= b_end) continue;
    for (int k = 0; k < 27; ++k) {
      __syncthreads();  // the previous tap's samples and sums are no longer read
      if (threadIdx.x < BM) {
        GradSample<acc_t>& out = sm.samples[threadIdx.x];
        out.inside = 0;
        if (threadIdx.x < valid_rows) {
          const auto& v = sm.voxels[threadIdx.x];
          const auto c = taps.coord(v, g, k);
          Corners<acc_t> cr;
          trilinear_corners(c.v[0], c.v[1], c.v[2], s.depth, s.height, s.width, cr);
#pragma unroll
          for (int q = 0; q < 8; ++q) {
            out.index[q] = cr.index[q];
            out.weight[q] = cr.weight[q];
          }
          out.frac[0] = cr.frac[0], out.frac[1] = cr.frac[1], out.frac[2] = cr.frac[2];
          out.modulation = taps.modulation(v, g, k);
          out.inside = cr.inside;
        }
#pragma unroll
        for (int a = 0; a < 4; ++a) sm.tap_grad[threadIdx.x][a] = acc_t(0);
      }
      __syncthreads();
      for (int64_t b = b_begin; b < b_end; ++b) {
        const int64_t cb = lo + (b - group_first) * T::BN;
        const int valid_c = static_cast<int>(hi - cb < T::BN ? hi - cb : T::BN);
        typename T::Acc acc;
        T::zero(acc);
        for (int64_t o0 = 0; o0 < s.out_channels; o0 += T::BK) {
          // a[kk][m] = ∂L/∂out of voxel m, output channel o0 + kk.
          for (int item = threadIdx.x; item < T::BK * BM; item += T::THREADS) {
            const bool channel_fast = gl.channel == 1;
            const int kk = channel_fast ? item % T::BK : item / BM;
            const int m = channel_fast ? item / T::BK : item % BM;
            const int64_t o = o0 + kk;
            acc_t value = acc_t(0);
            if (m < valid_rows && o < s.out_channels) {
              const auto& v = sm.voxels[m];
              value = static_cast<acc_t>(gout[v.n * gl.batch + o * gl.channel + v.p * gl.voxel]);
            }
            sm.op.a[kk][m] = value;
          }
          // b[kk][nn] = W[o0 + kk, cb + nn, k].
          const int64_t tap = wl.tap(k);
          for (int item = threadIdx.x; item < T::BK * T::BN; item += T::THREADS) {
            const int kk = item / T::BN, nn = item % T::BN;
            const int64_t o = o0 + kk;
            sm.op.b[kk][nn] = o < s.out_channels && nn < valid_c
                                  ? static_cast<acc_t>(w[o * wl.out + (cb + nn) * wl.channel + tap])
                                  : acc_t(0);
          }
          __syncthreads();
          T::multiply(sm.op, acc);
          __syncthreads();
        }
        // Spread ∂L/∂A of each of the thread's TM voxels × 8 channels over the sample's corners.
#pragma unroll
        for (int i = 0; i < T::TM; ++i) {
          const int m = ty * T::TM + i;
          const GradSample<acc_t>& smp = sm.samples[m];
          acc_t gc[3] = {acc_t(0), acc_t(0), acc_t(0)}, gm = acc_t(0);
          if (smp.inside != 0) {
            const acc_t mod = smp.modulation;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int cc = h * (T::BN / 2) + tx * 4;
              if (cc >= valid_c) continue;
              const int64_t c = cb + cc;
              acc_t gv[4];
#pragma unroll
              for (int e = 0; e < 4; ++e) gv[e] = cc + e < valid_c ? acc[i][4 * h + e] : acc_t(0);
              if (gx.data) {
                const Layout gxl = gx.layout;
                const int64_t base = sm.voxels[m].n * gxl.batch + (c - gx.c0) * gxl.channel;
#pragma unroll
                for (int q = 0; q < 8; ++q) {
                  if (!(smp.inside & (1u << q)) || smp.weight[q] == acc_t(0)) continue;
                  const acc_t wq = smp.weight[q] * mod;
                  acc_t* dst = gx.data + base + smp.index[q] * gxl.voxel;
                  if constexpr (std::is_same_v<acc_t, float>) {
                    if (gx.vector4) {
                      atomic_add4(dst, wq * gv[0], wq * gv[1], wq * gv[2], wq * gv[3]);
                      continue;
                    }
                  }
#pragma unroll
                  for (int e = 0; e < 4; ++e) {
                    if (cc + e < valid_c) atomic_add(dst + e * gxl.channel, wq * gv[e]);
                  }
                }
              }
              if (coordinates) {
                const int64_t base = sm.voxels[m].n * xl.batch + c * xl.channel;
#pragma unroll
                for (int q = 0; q < 8; ++q) {
                  if (!(smp.inside & (1u << q))) continue;
                  const scalar_t* src = x + base + smp.index[q] * xl.voxel;
                  acc_t v[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
                  bool loaded = false;
                  if constexpr (sizeof(scalar_t) <= 4) {
                    if (x_vector4) {
                      float f[4];
                      load4(src, f);
#pragma unroll
                      for (int e = 0; e < 4; ++e) v[e] = f[e];
                      loaded = true;
                    }
                  }
                  if (!loaded) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                      if (cc + e < valid_c) v[e] = static_cast<acc_t>(src[e * xl.channel]);
                    }
                  }
                  const acc_t dot = gv[0] * v[0] + gv[1] * v[1] + gv[2] * v[2] + gv[3] * v[3];
                  if (want_mask) gm += smp.weight[q] * dot;
                  acc_t dw[3];
                  corner_weight_grad(q, smp.frac[0], smp.frac[1], smp.frac[2], dw);
#pragma unroll
                  for (int a = 0; a < 3; ++a) gc[a] += dw[a] * dot;
                }
              }
            }
#pragma unroll
            for (int a = 0; a < 3; ++a) gc[a] *= mod;
          }
          if (coordinates) {  // sum over the 16 threads of the voxel (one half-warp)
#pragma unroll
            for (int offset = 8; offset > 0; offset /= 2) {
#pragma unroll
              for (int a = 0; a < 3; ++a) gc[a] += __shfl_xor_sync(0xffffffffu, gc[a], offset);
              gm += __shfl_xor_sync(0xffffffffu, gm, offset);
            }
            if (tx == 0) {
#pragma unroll
              for (int a = 0; a < 3; ++a) sm.tap_grad[m][a] += gc[a];
              sm.tap_grad[m][3] += gm;
            }
          }
        }
      }
      __syncthreads();
      if (coordinates && threadIdx.x < valid_rows) {
        const int m = threadIdx.x;
        taps.add_tap_grad(sm.grad_acc[m], sm.voxels[m], g, k, sm.tap_grad[m], sm.tap_grad[m][3]);
      }
    }
  }
  __syncthreads();
  if (coordinates && threadIdx.x < valid_rows) {
    taps.finish_grad(sm.grad_acc[threadIdx.x], sm.voxels[threadIdx.x]);
  }
}

}  // namespace cuda
}  // namespace d2bench
