// Fused forward of both operators: an implicit GEMM whose A operand (output voxels × sampled
// input channels of one tap) is interpolated straight into shared memory, so no im2col buffer
// ever exists in device memory.
//
//   out[r, o] = Σ_{g,k,c} A[r, (g,k,c)] · W[(k, c), o],  A[r, (g,k,c)] = m_gk(r) · x_c(coord_gk(r))
//
// Rows r run over N·P output voxels, columns over C_out, the reduction over the G·27 taps and the
// channels of each tap's group. Per (g, k) the 8 corners of every row's sample are computed once
// (modulation folded into the weights) and reused for all channel slices. Two tile shapes share
// the skeleton: tensor cores (WMMA, fp32 accumulation) for float16/bfloat16, and a register-
// tiled SIMT product for float32 (strict fp32, no TF32) and float64.
#pragma once

#include <mma.h>

#include <type_traits>

#include "common.cuh"

namespace d2bench {
namespace cuda {

// One row's sample for the current tap: element offsets (batch included) and weights.
template <typename coord_t>
struct RowCorners {
  int64_t offset[8];
  coord_t weight[8];  // trilinear weight × modulation; 0 outside the volume
};

// Fill smem corners for rows row0 .. row0 + BM − 1 at tap k of group g.
template <int BM, typename Taps, typename coord_t>
__device__ __forceinline__ void compute_row_corners(const Taps& taps, Layout xl, int64_t row0,
                                                    int64_t g, int k,
                                                    RowCorners<coord_t>* corners) {
  const int tid = threadIdx.x;
  if (tid >= BM) return;
  const ConvShape& s = taps.shape;
  RowCorners<coord_t>& out = corners[tid];
  const int64_t r = row0 + tid;
  if (r >= s.batch * s.out_plane()) {
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      out.offset[q] = 0;
      out.weight[q] = coord_t(0);
    }
    return;
  }
  const int64_t n = r / s.out_plane(), p = r - n * s.out_plane();
  const auto v = taps.voxel(n, p);
  const auto c = taps.coord(v, g, k);
  Corners<coord_t> cr;
  trilinear_corners(c.v[0], c.v[1], c.v[2], s.depth, s.height, s.width, cr);
  const coord_t m = taps.modulation(v, g, k);
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    out.offset[q] = n * xl.batch + cr.index[q] * xl.voxel;
    out.weight[q] = cr.weight[q] * m;
  }
}

// The VEC values of a 16-byte load as coord_t, by bit manipulation (no round trip through
// local memory, which taking the address of the loaded vector would cause).
__device__ __forceinline__ void unpack_word(uint32_t w, at::BFloat16*, float* out) {
  out[0] = __uint_as_float(w << 16);
  out[1] = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void unpack_word(uint32_t w, at::Half*, float* out) {
  out[0] = __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xffffu)));
  out[1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16)));
}
__device__ __forceinline__ void unpack_word(uint32_t w, float*, float* out) {
  out[0] = __uint_as_float(w);
}

template <typename scalar_t>
__device__ __forceinline__ void unpack16(const uint4& raw, coord_type<scalar_t>* out) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    out[0] = __hiloint2double(static_cast<int>(raw.y), static_cast<int>(raw.x));
    out[1] = __hiloint2double(static_cast<int>(raw.w), static_cast<int>(raw.z));
  } else {
    constexpr int per_word = 4 / sizeof(scalar_t);
    scalar_t* tag = nullptr;
    unpack_word(raw.x, tag, out);
    unpack_word(raw.y, tag, out + per_word);
    unpack_word(raw.z, tag, out + 2 * per_word);
    unpack_word(raw.w, tag, out + 3 * per_word);
  }
}

// A[m, kk] for kk < valid_k (channels c_first + kk), 0 beyond; `store(m, kk, value)` writes it.
// With vector loads the channels are contiguous and each thread reads 16 bytes per corner.
template <typename scalar_t, int BM, int BK, int THREADS, typename coord_t, typename Store>
__device__ __forceinline__ void gather_tile(const RowCorners<coord_t>* corners,
                                            const scalar_t* __restrict__ x, Layout xl,
                                            int64_t c_first, int valid_k, bool vector_loads,
                                            Store store) {
  const int tid = threadIdx.x;
  constexpr int VEC = 16 / sizeof(scalar_t);
  if (BK % VEC == 0 && vector_loads) {
    constexpr int PER_ROW = BK / VEC;
    for (int item = tid; item < BM * PER_ROW; item += THREADS) {
      const int m = item / PER_ROW, kk0 = (item % PER_ROW) * VEC;
      coord_t acc[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[e] = coord_t(0);
      if (kk0 < valid_k) {
        const RowCorners<coord_t>& rc = corners[m];
        const scalar_t* base = x + c_first + kk0;  // channel stride is 1 here
        // All 8 loads are issued before any is used (a corner outside the volume reads a valid
        // address with weight 0), so their latencies overlap.
        uint4 raw[8];
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          raw[q] = __ldg(reinterpret_cast<const uint4*>(base + rc.offset[q]));
        }
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          const coord_t w = rc.weight[q];
          coord_t vals[VEC];
          unpack16<scalar_t>(raw[q], vals);
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[e] += w * vals[e];
        }
      }
      store.vector(m, kk0, acc);
    }
  } else {
    for (int item = tid; item < BM * BK; item += THREADS) {
      const int m = item % BM, kk = item / BM;  // neighbouring threads, neighbouring voxels
      coord_t acc = coord_t(0);
      if (kk < valid_k) {
        const RowCorners<coord_t>& rc = corners[m];
        const scalar_t* plane = x + (c_first + kk) * xl.channel;
#pragma unroll
        for (int q = 0; q < 8; ++q) {
          const coord_t w = rc.weight[q];
          if (w != coord_t(0)) acc += w * static_cast<coord_t>(plane[rc.offset[q]]);
        }
      }
      store(m, kk, acc);
    }
  }
}

// B[kk, nn] = W2t[k_row + kk, o0 + nn] (W2t is (27·C) × C_out, row-major), 0 out of range.
template <int BN, int BK, int THREADS, typename scalar_t, typename Store>
__device__ __forceinline__ void load_weight_tile(const scalar_t* __restrict__ w2t,
                                                 int64_t k_row, int valid_k, int64_t o0,
                                                 int64_t out_channels, bool vector_weights,
                                                 Store store) {
  constexpr int VEC = 16 / sizeof(scalar_t);
  if (BN % VEC == 0 && vector_weights && o0 + BN <= out_channels) {
    constexpr int PER_ROW = BN / VEC;
    for (int item = threadIdx.x; item < BK * PER_ROW; item += THREADS) {
      const int kk = item / PER_ROW, nn0 = (item % PER_ROW) * VEC;
      uint4 raw = make_uint4(0, 0, 0, 0);
      if (kk < valid_k) {
        raw = __ldg(reinterpret_cast<const uint4*>(w2t + (k_row + kk) * out_channels + o0 + nn0));
      }
      store.vector(kk, nn0, raw);
    }
    return;
  }
  for (int item = threadIdx.x; item < BK * BN; item += THREADS) {
    const int kk = item / BN, nn = item % BN;
    scalar_t v = scalar_t(0);
    if (kk < valid_k && o0 + nn < out_channels) v = w2t[(k_row + kk) * out_channels + o0 + nn];
    store(kk, nn, v);
  }
}

// Writes A-tile elements into a Tile's shared memory, one at a time or VEC at a time.
template <typename Tile>
struct ColumnStore {
  typename Tile::Smem& sm;
  template <typename coord_t>
  __device__ void operator()(int m, int kk, coord_t v) const {
    Tile::store_a(sm, m, kk, v);
  }
  template <typename coord_t>
  __device__ void vector(int m, int kk0, const coord_t* v) const {
    Tile::store_a_vector(sm, m, kk0, v);
  }
};

// Writes B-tile elements into a Tile's shared memory, one at a time or 16 bytes at a time.
template <typename Tile>
struct WeightStore {
  typename Tile::Smem& sm;
  template <typename scalar_t>
  __device__ void operator()(int kk, int nn, scalar_t v) const {
    Tile::store_b(sm, kk, nn, v);
  }
  __device__ void vector(int kk, int nn0, const uint4& raw) const {
    Tile::store_b_vector(sm, kk, nn0, raw);
  }
};

// ---- SIMT tile: float32 / float64 ----
template <typename scalar_t>
struct SimtTile {
  static constexpr int BM = 128, BN = 128, BK = 8, THREADS = 256, TM = 8, TN = 8;
  using coord_t = coord_type<scalar_t>;
  struct Smem {
    alignas(16) scalar_t a[BK][BM];
    alignas(16) scalar_t b[BK][BN];
    RowCorners<coord_t> corners[BM];
  };
  struct Acc {
    coord_t v[TM][TN];
  };
  __device__ static void zero(Acc& acc) {
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc.v[i][j] = coord_t(0);
  }
  __device__ static void store_a(Smem& sm, int m, int kk, coord_t v) {
    sm.a[kk][m] = static_cast<scalar_t>(v);
  }
  __device__ static void store_a_vector(Smem& sm, int m, int kk0, const coord_t* v) {
#pragma unroll
    for (int e = 0; e < int(16 / sizeof(scalar_t)); ++e) {
      sm.a[kk0 + e][m] = static_cast<scalar_t>(v[e]);
    }
  }
  __device__ static void store_b(Smem& sm, int kk, int nn, scalar_t v) { sm.b[kk][nn] = v; }
  __device__ static void store_b_vector(Smem& sm, int kk, int nn0, const uint4& raw) {
    *reinterpret_cast<uint4*>(&sm.b[kk][nn0]) = raw;
  }
  __device__ static void multiply(Smem& sm, Acc& acc) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      coord_t a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = sm.a[kk][ty * TM + i];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = sm.b[kk][tx * TN + j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc.v[i][j] += a[i] * b[j];
    }
  }
  __device__ static void store_out(Smem&, const Acc& acc, scalar_t* out, Layout ol,
                                   const scalar_t* bias, int64_t row0, int64_t o0,
                                   const ConvShape& s) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    const int64_t rows = s.batch * s.out_plane();
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int64_t r = row0 + ty * TM + i;
      if (r >= rows) continue;
      const int64_t n = r / s.out_plane(), p = r - n * s.out_plane();
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const int64_t o = o0 + tx * TN + j;
        if (o >= s.out_channels) continue;
        const coord_t b = bias ? static_cast<coord_t>(bias[o]) : coord_t(0);
        out[ol.at(n, o, p)] = static_cast<scalar_t>(acc.v[i][j] + b);
      }
    }
  }
};

// ---- tensor-core tile: float16 / bfloat16 ----
template <typename scalar_t>
struct MmaType;
template <>
struct MmaType<at::BFloat16> {
  using type = __nv_bfloat16;
  __device__ static type from_float(float v) { return __float2bfloat16(v); }
};
template <>
struct MmaType<at::Half> {
  using type = __half;
  __device__ static type from_float(float v) { return __float2half(v); }
};

template <typename scalar_t>
struct WmmaTile {
  // All 256 output channels of the paper's layers in one CTA: each row's samples are gathered
  // once, not once per column tile.
  static constexpr int BM = 64, BN = 256, BK = 32, THREADS = 256;
  static constexpr int WARP_M = 32, WARP_N = 64;  // 2 × 4 warps
  static constexpr int WARPS_N = BN / WARP_N;
  static constexpr int FM = WARP_M / 16, FN = WARP_N / 16;
  static constexpr int LDA = BK + 8, LDB = BN + 8;  // padding against bank conflicts
  using coord_t = float;
  using mma_t = typename MmaType<scalar_t>::type;
  struct Smem {
    alignas(32) mma_t a[BM][LDA];
    alignas(32) mma_t b[BK][LDB];
    alignas(32) float stage[THREADS / 32][16 * 16];
    RowCorners<coord_t> corners[BM];
  };
  struct Acc {
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> f[FM][FN];
  };
  __device__ static void zero(Acc& acc) {
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j) nvcuda::wmma::fill_fragment(acc.f[i][j], 0.0f);
  }
  __device__ static void store_a(Smem& sm, int m, int kk, float v) {
    sm.a[m][kk] = MmaType<scalar_t>::from_float(v);
  }
  // 8 values packed into one 16-byte store (LDA·2 bytes and kk0·2 bytes are multiples of 16).
  __device__ static void store_a_vector(Smem& sm, int m, int kk0, const float* v) {
    uint32_t words[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const mma_t lo = MmaType<scalar_t>::from_float(v[2 * e]);
      const mma_t hi = MmaType<scalar_t>::from_float(v[2 * e + 1]);
      words[e] = static_cast<uint32_t>(*reinterpret_cast<const unsigned short*>(&lo)) |
                 (static_cast<uint32_t>(*reinterpret_cast<const unsigned short*>(&hi)) << 16);
    }
    *reinterpret_cast<uint4*>(&sm.a[m][kk0]) = make_uint4(words[0], words[1], words[2], words[3]);
  }
  __device__ static void store_b(Smem& sm, int kk, int nn, scalar_t v) {
    sm.b[kk][nn] = *reinterpret_cast<const mma_t*>(&v);
  }
  __device__ static void store_b_vector(Smem& sm, int kk, int nn0, const uint4& raw) {
    *reinterpret_cast<uint4*>(&sm.b[kk][nn0]) = raw;  // LDB·2 bytes is a multiple of 16
  }
  __device__ static void multiply(Smem& sm, Acc& acc) {
    using namespace nvcuda;
    const int warp = threadIdx.x / 32;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, mma_t, wmma::row_major> a[FM];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, mma_t, wmma::row_major> b[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i)
        wmma::load_matrix_sync(a[i], &sm.a[wm * WARP_M + i * 16][ks], LDA);
#pragma unroll
      for (int j = 0; j < FN; ++j)
        wmma::load_matrix_sync(b[j], &sm.b[ks][wn * WARP_N + j * 16], LDB);
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::mma_sync(acc.f[i][j], a[i], b[j], acc.f[i][j]);
    }
  }
  __device__ static void store_out(Smem& sm, const Acc& acc, scalar_t* out, Layout ol,
                                   const scalar_t* bias, int64_t row0, int64_t o0,
                                   const ConvShape& s) {
    using namespace nvcuda;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int64_t rows = s.batch * s.out_plane();
    float* stage = sm.stage[warp];
#pragma unroll
    for (int i = 0; i < FM; ++i) {
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        wmma::store_matrix_sync(stage, acc.f[i][j], 16, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
          const int64_t r = row0 + wm * WARP_M + i * 16 + e / 16;
          const int64_t o = o0 + wn * WARP_N + j * 16 + e % 16;
          if (r < rows && o < s.out_channels) {
            const int64_t n = r / s.out_plane(), p = r - n * s.out_plane();
            const float b = bias ? static_cast<float>(bias[o]) : 0.0f;
            out[ol.at(n, o, p)] = static_cast<scalar_t>(stage[e] + b);
          }
        }
        __syncwarp();
      }
    }
  }
};

template <typename scalar_t, typename Taps, typename Tile>
__global__ void __launch_bounds__(Tile::THREADS, 2)
    fused_forward_kernel(const scalar_t* __restrict__ x, Layout xl, const Taps taps,
                         const scalar_t* __restrict__ w2t, const scalar_t* __restrict__ bias,
                         scalar_t* __restrict__ out, Layout ol, bool vector_loads,
                         bool vector_weights) {
  using coord_t = typename Tile::coord_t;
  __shared__ typename Tile::Smem sm;
  const ConvShape& s = taps.shape;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * Tile::BM;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * Tile::BN;
  const int64_t cg = s.group_channels();
  typename Tile::Acc acc;
  Tile::zero(acc);
  const ColumnStore<Tile> store_a{sm};
  const WeightStore<Tile> store_b{sm};
  for (int64_t g = 0; g < s.groups; ++g) {
    for (int k = 0; k < 27; ++k) {
      __syncthreads();
      compute_row_corners<Tile::BM>(taps, xl, row0, g, k, sm.corners);
      __syncthreads();
      for (int64_t c0 = 0; c0 < cg; c0 += Tile::BK) {
        const int valid_k = static_cast<int>(cg - c0 < Tile::BK ? cg - c0 : Tile::BK);
        const int64_t c_first = g * cg + c0;
        gather_tile<scalar_t, Tile::BM, Tile::BK, Tile::THREADS>(sm.corners, x, xl, c_first,
                                                                 valid_k, vector_loads, store_a);
        load_weight_tile<Tile::BN, Tile::BK, Tile::THREADS>(
            w2t, static_cast<int64_t>(k) * s.channels + c_first, valid_k, o0, s.out_channels,
            vector_weights, store_b);
        __syncthreads();
        Tile::multiply(sm, acc);
        __syncthreads();
      }
    }
  }
  Tile::store_out(sm, acc, out, ol, bias, row0, o0, s);
}

}  // namespace cuda
}  // namespace d2bench
