// Fused forward of both operators: an implicit GEMM whose A operand (output voxels × sampled
// input channels of one tap) is interpolated straight into shared memory, so no im2col buffer
// ever exists in device memory.
//
//   out[r, o] = Σ_{g,k,c} A[r, (g,k,c)] · W[(k, c), o],  A[r, (g,k,c)] = m_gk(r) · x_c(coord_gk(r))
//
// Rows r run over N·P output voxels, columns over C_out, the reduction over the G·27 taps and the
// channels of each tap's group. Per (g, k) the 8 corners of every row's sample are computed once
// (modulation folded into the weights) and reused for all channel slices; corners that weigh
// nothing in any row of the tile are not loaded at all (LiveCorners). Two tile shapes share the
// skeleton: tensor cores (mma.sync m16n8k16 fed by ldmatrix, fp32 accumulation) for
// float16/bfloat16, and a register-tiled SIMT product for float32 (strict fp32, no TF32) and
// float64. Each tile comes in two register budgets, for one or two CTAs per SM; the launcher
// picks by grid size (sampling_conv_cuda.cu).
//
// The weight tile is read straight from the weight in channels_last_3d order (no re-laid-out
// copy); the tensor-core tile copies it with cp.async, issued before the gather so the two
// overlap. Measured and dropped (reports/bench/ops-notes.md): a multi-stage cp.async pipeline
// across steps, and a two-stage register-prefetch pipeline.
#pragma once

#include <type_traits>

#include "common.cuh"
#include "mma.cuh"

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
                                                    RowCorners<coord_t>* corners,
                                                    unsigned* live) {
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
  unsigned bits = 0;
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    out.offset[q] = n * xl.batch + cr.index[q] * xl.voxel;
    out.weight[q] = cr.weight[q] * m;
    bits |= static_cast<unsigned>(out.weight[q] != coord_t(0)) << q;
  }
  atomicOr(live, bits);
}

// The corners of a tap that weigh something in some row of the tile. A D²Conv3D tap whose offset
// along an axis is 0 samples an integer coordinate there, so only 1, 2 or 4 of its 8 corners
// count (125 of 216 over the 27 taps); the gather then loads just those. `width` is the count
// rounded up to 1, 2, 4 or 8, the list padded with corners that weigh nothing.
struct LiveCorners {
  int width;
  unsigned packed;  // corner indices, 3 bits each: the live ones first

  __device__ int at(int i) const { return static_cast<int>((packed >> (3 * i)) & 7u); }
  __device__ static LiveCorners of(unsigned mask) {
    LiveCorners live{0, 0u};
    int n = 0;
#pragma unroll
    for (int pass = 0; pass < 2; ++pass) {
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        if (static_cast<bool>(mask & (1u << q)) == (pass == 0)) {
          live.packed |= static_cast<unsigned>(q) << (3 * n);
          ++n;
        }
      }
      if (pass == 0) {
        live.width = n <= 1 ? 1 : (n <= 2 ? 2 : (n <= 4 ? 4 : 8));
      }
    }
    return live;
  }
};

// A[m, kk] for kk < valid_k (channels c_first + kk), 0 beyond; `store(m, kk, value)` writes it.
// With vector loads the channels are contiguous and each thread reads 16 bytes per corner.
template <int COUNT, typename scalar_t, int BM, int BK, int THREADS, typename coord_t,
          typename Store>
__device__ __forceinline__ void gather_tile(const RowCorners<coord_t>* corners, LiveCorners live,
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
        // All COUNT loads are issued before any is used (a corner outside the volume reads a
        // valid address with weight 0), so their latencies overlap.
        uint4 raw[COUNT];
#pragma unroll
        for (int i = 0; i < COUNT; ++i) {
          const int q = COUNT == 8 ? i : live.at(i);
          raw[i] = __ldg(reinterpret_cast<const uint4*>(base + rc.offset[q]));
        }
#pragma unroll
        for (int i = 0; i < COUNT; ++i) {
          const coord_t w = rc.weight[COUNT == 8 ? i : live.at(i)];
          coord_t vals[VEC];
          unpack16<scalar_t>(raw[i], vals);
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

// gather_tile with COUNT = the live corners' width (the same in every thread of the CTA), so
// each kernel dispatches on it in one place.
template <typename scalar_t, int BM, int BK, int THREADS, typename coord_t, typename Store>
__device__ __forceinline__ void gather_live_tile(const RowCorners<coord_t>* corners,
                                                 LiveCorners live, const scalar_t* __restrict__ x,
                                                 Layout xl, int64_t c_first, int valid_k,
                                                 bool vector_loads, Store store) {
  switch (live.width) {
    case 1:
      gather_tile<1, scalar_t, BM, BK, THREADS>(corners, live, x, xl, c_first, valid_k,
                                                vector_loads, store);
      break;
    case 2:
      gather_tile<2, scalar_t, BM, BK, THREADS>(corners, live, x, xl, c_first, valid_k,
                                                vector_loads, store);
      break;
    case 4:
      gather_tile<4, scalar_t, BM, BK, THREADS>(corners, live, x, xl, c_first, valid_k,
                                                vector_loads, store);
      break;
    default:
      gather_tile<8, scalar_t, BM, BK, THREADS>(corners, live, x, xl, c_first, valid_k,
                                                vector_loads, store);
  }
}

// B[kk, nn] = W[o0 + nn, tap, c + kk] for the weight in channels_last_3d order (each output
// channel's 27 taps × C channels contiguous, `k_col` = tap·C + c), 0 out of range. Read in that
// order, the weight needs no re-laid-out copy. With vector loads each thread reads VEC
// consecutive channels of one output channel; Tile::B_K_FAST says whether neighbouring threads
// take neighbouring channels (tiles that keep B as [n][k]) or neighbouring output channels.
template <typename Tile, typename scalar_t>
__device__ __forceinline__ void load_weight_tile(typename Tile::Smem& sm,
                                                 const scalar_t* __restrict__ w, int64_t w_row,
                                                 int64_t k_col, int valid_k, int64_t o0,
                                                 int64_t out_channels, bool vector_weights) {
  constexpr int BN = Tile::BN, BK = Tile::BK, VEC = 16 / sizeof(scalar_t);
  if (BK % VEC == 0 && vector_weights) {
    constexpr int PER_N = BK / VEC;
    static_assert((BN * PER_N) % Tile::THREADS == 0, "whole passes over the B tile");
    // Threads step through the tile in passes; a pass moves STEP_N output channels (k-fast) or
    // STEP_K channels (n-fast), so one base pointer serves every pass.
    constexpr int STEP_N = Tile::B_K_FAST ? Tile::THREADS / PER_N : 0;
    constexpr int STEP_K = Tile::B_K_FAST ? 0 : (Tile::THREADS / BN) * VEC;
    const int nn = Tile::B_K_FAST ? threadIdx.x / PER_N : threadIdx.x % BN;
    const int kk0 = (Tile::B_K_FAST ? threadIdx.x % PER_N : threadIdx.x / BN) * VEC;
    const scalar_t* src = w + (o0 + nn) * w_row + k_col + kk0;
#pragma unroll
    for (int pass = 0; pass < BN * PER_N / Tile::THREADS; ++pass) {
      const int n = nn + pass * STEP_N, k = kk0 + pass * STEP_K;
      const bool valid = k < valid_k && o0 + n < out_channels;
      const scalar_t* from = src + pass * (STEP_N * w_row) + pass * STEP_K;
      if constexpr (Tile::B_ASYNC) {
        // Straight into shared memory (no registers); the caller waits before its barrier.
        cp_async16(Tile::b_slot(sm, n, k), valid ? from : w, valid);
      } else {
        uint4 raw = make_uint4(0, 0, 0, 0);
        if (valid) raw = __ldg(reinterpret_cast<const uint4*>(from));
        Tile::store_b_vector(sm, n, k, raw);
      }
    }
    if constexpr (Tile::B_ASYNC) cp_async_commit();
    return;
  }
  for (int item = threadIdx.x; item < BK * BN; item += Tile::THREADS) {
    const int kk = item % BK, nn = item / BK;
    scalar_t v = scalar_t(0);
    if (kk < valid_k && o0 + nn < out_channels) v = w[(o0 + nn) * w_row + k_col + kk];
    Tile::store_b(sm, kk, nn, v);
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

// ---- SIMT tile: float32 / float64 ----
// MinBlocks: CTAs per SM the register allocation must allow (2: at most 128 registers); Rows:
// output voxels per CTA (fewer for grids that would not fill the GPU).
template <typename scalar_t, int MinBlocks = 2, int Rows = 128>
struct SimtTile {
  // float32 takes 32 channels per step (more products per barrier); float64 only serves
  // gradcheck and keeps to 8 so its shared memory stays under the static 48 KiB.
  static constexpr int BM = Rows, BN = 128, BK = sizeof(scalar_t) == 4 ? 32 : 8, THREADS = 256;
  static constexpr int MIN_BLOCKS = MinBlocks;
  // float32: neighbouring threads read neighbouring channels (coalesced) and store them down a
  // column of the [k][n] tile, whose 4-column groups are XOR-swizzled by row so that those
  // stores hit 32 different banks. float64 (gradcheck only) keeps the plain layout.
  static constexpr bool B_K_FAST = sizeof(scalar_t) == 4, B_ASYNC = false;
  static constexpr int TM = BM / 16, TN = 8;  // 16 × 16 threads
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
  // Thread tx owns columns 4·tx .. 4·tx + 3 and BN/2 + 4·tx .. + 3: a warp's 16-byte reads of a
  // B row are then contiguous (conflict-free), not 32 bytes apart.
  __device__ static int column(int tx, int j) { return (j / 4) * (BN / 2) + tx * 4 + j % 4; }
  __device__ static void store_a(Smem& sm, int m, int kk, coord_t v) {
    sm.a[kk][m] = static_cast<scalar_t>(v);
  }
  __device__ static void store_a_vector(Smem& sm, int m, int kk0, const coord_t* v) {
#pragma unroll
    for (int e = 0; e < int(16 / sizeof(scalar_t)); ++e) {
      sm.a[kk0 + e][m] = static_cast<scalar_t>(v[e]);
    }
  }
  // Column of B element (kk, nn) in shared memory: nn with its 4-column group XOR-swizzled by
  // kk / 4 (float32), so 8 rows × 4 columns of a warp's stores fall in distinct banks.
  __device__ static int swizzle(int kk, int nn) {
    return B_K_FAST ? nn ^ (((kk >> 2) & 7) << 2) : nn;
  }
  __device__ static void store_b(Smem& sm, int kk, int nn, scalar_t v) {
    sm.b[kk][swizzle(kk, nn)] = v;
  }
  // VEC consecutive channels kk0.. of output channel nn: one column of the [k][n] tile.
  __device__ static void store_b_vector(Smem& sm, int nn, int kk0, const uint4& raw) {
    constexpr int VEC = 16 / sizeof(scalar_t);
    scalar_t v[VEC];
    if constexpr (sizeof(scalar_t) == 4) {
      v[0] = __uint_as_float(raw.x);
      v[1] = __uint_as_float(raw.y);
      v[2] = __uint_as_float(raw.z);
      v[3] = __uint_as_float(raw.w);
    } else {
      v[0] = __hiloint2double(static_cast<int>(raw.y), static_cast<int>(raw.x));
      v[1] = __hiloint2double(static_cast<int>(raw.w), static_cast<int>(raw.z));
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) sm.b[kk0 + e][swizzle(kk0 + e, nn)] = v[e];
  }
  __device__ static void multiply(Smem& sm, Acc& acc) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      coord_t a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = sm.a[kk][ty * TM + i];
#pragma unroll
      for (int h = 0; h < TN / 4; ++h) {  // 4 contiguous columns: the swizzle moves groups of 4
        const scalar_t* group = &sm.b[kk][swizzle(kk, column(tx, 4 * h))];
        if constexpr (sizeof(scalar_t) == 4) {  // 16-byte aligned: one vector read
          const float4 q = *reinterpret_cast<const float4*>(group);
          b[4 * h] = q.x;
          b[4 * h + 1] = q.y;
          b[4 * h + 2] = q.z;
          b[4 * h + 3] = q.w;
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e) b[4 * h + e] = group[e];
        }
      }
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
        const int64_t o = o0 + column(tx, j);
        if (o >= s.out_channels) continue;
        const coord_t b = bias ? static_cast<coord_t>(bias[o]) : coord_t(0);
        out[ol.at(n, o, p)] = static_cast<scalar_t>(acc.v[i][j] + b);
      }
    }
  }
};

// ---- tensor-core tile: float16 / bfloat16 ----
// MinBlocks: CTAs per SM the register allocation must allow (2: at most 128 registers); Rows:
// output voxels per CTA (fewer for grids that would not fill the GPU).
template <typename scalar_t, int MinBlocks = 2, int Rows = 64>
struct MmaTile {
  // All 256 output channels of the paper's layers in one CTA: each row's samples are gathered
  // once, not once per column tile. 64 rows: 2 × 4 warps of 32 × 64; 32 rows: 1 × 8 of 32 × 32.
  static constexpr int BM = Rows, BN = 256, BK = 32, THREADS = 256, MIN_BLOCKS = MinBlocks;
  static constexpr int WARP_M = 32, WARPS_M = BM / WARP_M, WARPS_N = 8 / WARPS_M;
  static constexpr int WARP_N = BN / WARPS_N;
  static constexpr int TILES_M = WARP_M / 16, TILES_N = WARP_N / 8;  // m16n8 products per warp
  // B is kept as [n][k] (the mma's column-major operand), copied in by cp.async.
  static constexpr bool B_K_FAST = true, B_ASYNC = true;
  static constexpr int LDA = BK + 8, LDB = BK + 8;  // padding: conflict-free ldmatrix rows
  using coord_t = float;
  using mma_t = typename MmaType<scalar_t>::type;
  struct Smem {
    alignas(16) mma_t a[BM][LDA];
    alignas(16) mma_t b[BN][LDB];
    RowCorners<coord_t> corners[BM];
  };
  struct Acc {
    float c[TILES_M][TILES_N][4];
  };
  __device__ static void zero(Acc& acc) {
#pragma unroll
    for (int i = 0; i < TILES_M; ++i)
#pragma unroll
      for (int j = 0; j < TILES_N; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc.c[i][j][e] = 0.0f;
  }
  __device__ static void store_a(Smem& sm, int m, int kk, float v) {
    sm.a[m][kk] = MmaType<scalar_t>::from_float(v);
  }
  // 8 values packed into one 16-byte store (LDA·2 bytes and kk0·2 bytes are multiples of 16).
  __device__ static void store_a_vector(Smem& sm, int m, int kk0, const float* v) {
    uint32_t words[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) words[e] = MmaType<scalar_t>::pack(v[2 * e], v[2 * e + 1]);
    *reinterpret_cast<uint4*>(&sm.a[m][kk0]) = make_uint4(words[0], words[1], words[2], words[3]);
  }
  __device__ static void store_b(Smem& sm, int kk, int nn, scalar_t v) {
    sm.b[nn][kk] = *reinterpret_cast<const mma_t*>(&v);
  }
  __device__ static void store_b_vector(Smem& sm, int nn, int kk0, const uint4& raw) {
    *reinterpret_cast<uint4*>(&sm.b[nn][kk0]) = raw;  // LDB·2 bytes is a multiple of 16
  }
  __device__ static void* b_slot(Smem& sm, int nn, int kk0) { return &sm.b[nn][kk0]; }
  __device__ static void multiply(Smem& sm, Acc& acc) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int m0 = (warp / WARPS_N) * WARP_M, n0 = (warp % WARPS_N) * WARP_N;
    mma_t* tag = nullptr;
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      uint32_t a[TILES_M][4];
#pragma unroll
      for (int i = 0; i < TILES_M; ++i) {
        ldmatrix_x4(a[i], &sm.a[m0 + i * 16 + (lane & 15)][ks + (lane >> 4) * 8]);
      }
#pragma unroll
      for (int jj = 0; jj < TILES_N / 2; ++jj) {
        uint32_t b[4];  // k16 × n16: b[0..1] for columns n0 + 16·jj + 0..7, b[2..3] for + 8..15
        ldmatrix_x4(b, &sm.b[n0 + jj * 16 + (lane >> 4) * 8 + (lane & 7)][ks + ((lane >> 3) & 1) * 8]);
#pragma unroll
        for (int i = 0; i < TILES_M; ++i) {
          mma_16816(acc.c[i][2 * jj], a[i], b, tag);
          mma_16816(acc.c[i][2 * jj + 1], a[i], b + 2, tag);
        }
      }
    }
  }
  // Straight from the accumulators: thread (g, q) of a warp holds rows g and g + 8, columns
  // 2q and 2q + 1 of every m16n8 product.
  __device__ static void store_out(Smem&, const Acc& acc, scalar_t* out, Layout ol,
                                   const scalar_t* bias, int64_t row0, int64_t o0,
                                   const ConvShape& s) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int m0 = (warp / WARPS_N) * WARP_M, n0 = (warp % WARPS_N) * WARP_N;
    const int64_t rows = s.batch * s.out_plane();
#pragma unroll
    for (int i = 0; i < TILES_M; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t r = row0 + m0 + i * 16 + h * 8 + lane / 4;
        if (r >= rows) continue;
        const int64_t n = r / s.out_plane(), p = r - n * s.out_plane();
#pragma unroll
        for (int j = 0; j < TILES_N; ++j) {
          const int64_t o = o0 + n0 + j * 8 + 2 * (lane % 4);
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            if (o + e >= s.out_channels) continue;
            const float b = bias ? static_cast<float>(bias[o + e]) : 0.0f;
            out[ol.at(n, o + e, p)] = static_cast<scalar_t>(acc.c[i][j][2 * h + e] + b);
          }
        }
      }
    }
  }
};

template <typename scalar_t, typename Taps, typename Tile>
__global__ void __launch_bounds__(Tile::THREADS, Tile::MIN_BLOCKS)
    fused_forward_kernel(const scalar_t* __restrict__ x, Layout xl, const Taps taps,
                         const scalar_t* __restrict__ w, const scalar_t* __restrict__ bias,
                         scalar_t* __restrict__ out, Layout ol, bool vector_loads,
                         bool vector_weights) {
  using coord_t = typename Tile::coord_t;
  __shared__ typename Tile::Smem sm;
  __shared__ unsigned live;  // bit q: corner q weighs something in some row at this tap
  const ConvShape& s = taps.shape;
  // Output-channel blocks vary fastest: the blocks of one row tile run side by side and gather
  // the same input while it is in L2 (an input larger than L2 would otherwise stream from memory
  // once per block).
  const int64_t channel_blocks = (s.out_channels + Tile::BN - 1) / Tile::BN;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) / channel_blocks * Tile::BM;
  const int64_t o0 = static_cast<int64_t>(blockIdx.x) % channel_blocks * Tile::BN;
  const int64_t cg = s.group_channels();
  typename Tile::Acc acc;
  Tile::zero(acc);
  const ColumnStore<Tile> store_a{sm};
  const int64_t w_row = 27 * s.channels;
  for (int64_t g = 0; g < s.groups; ++g) {
    for (int k = 0; k < 27; ++k) {
      if (threadIdx.x == 0) live = 0;  // every gather of the previous tap is behind a barrier
      __syncthreads();
      compute_row_corners<Tile::BM>(taps, xl, row0, g, k, sm.corners, &live);
      __syncthreads();
      const LiveCorners live_corners = LiveCorners::of(live);
      for (int64_t c0 = 0; c0 < cg; c0 += Tile::BK) {
        const int valid_k = static_cast<int>(cg - c0 < Tile::BK ? cg - c0 : Tile::BK);
        const int64_t c_first = g * cg + c0;
        // The weight tile first: with cp.async its copies overlap the gather.
        load_weight_tile<Tile>(sm, w, w_row, static_cast<int64_t>(k) * s.channels + c_first,
                               valid_k, o0, s.out_channels, vector_weights);
        gather_live_tile<scalar_t, Tile::BM, Tile::BK, Tile::THREADS>(
            sm.corners, live_corners, x, xl, c_first, valid_k, vector_loads, store_a);
        cp_async_wait_all();
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
