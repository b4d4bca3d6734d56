// Forward for Hopper (sm_90a), float16/bfloat16 with channels_last_3d input: the implicit GEMM
// of fused_forward.cuh (out[r, o] = Σ A[r, (g,k,c)] · W[o, k, c], A the modulated trilinear
// samples) with the products on the tensor cores' asynchronous path, so that the gather of one
// step overlaps the products of the one before.
//
// A CTA takes 128 output voxels × 256 output channels and walks the (group, tap, 32-channel
// slice) steps. Each of its two warpgroups interpolates its own 64 rows of a step straight into
// a shared-memory A tile (three per warpgroup, in turn) and multiplies them with one
// wgmma.m64n256k16 per k16 slice, accumulating in registers. The weight tiles (256 × 32) come by
// the copy engine (TMA) into a ring, a few steps ahead, handed over by mbarriers. A warp computes
// its 16 rows' corners once per tap into a small shared table used by all channel slices; corners
// along an axis where no row of the warp leaves the grid are not loaded (a D²Conv3D tap with a
// zero offset along an axis samples an integer coordinate there: 125 of the 216 corners count,
// and 27 of them at unit dilation). Measurements: reports/bench/ops-notes.md, "Version 7".
#pragma once

#include <cuda.h>

#include <type_traits>

#include "common.cuh"
#include "mma.cuh"
#include "wgmma.cuh"

namespace d2bench {
namespace cuda {

struct HopperTile {
  static constexpr int BM = 128, BN = 256, BK = 32;  // voxels, output channels, channels / step
  static constexpr int THREADS = 256;                // two warpgroups of 64 rows each
  static constexpr int A_STAGES = 3;                 // A tiles per warpgroup, used in turn
  // Weight ring: tiles are copied B_AHEAD steps ahead; a slot is released two steps after its
  // products were issued, so B_AHEAD <= B_STAGES − 2, and one spare slot lets a warpgroup run a
  // step ahead of the other. (Other ring sizes were no faster: reports/bench/ops-notes.md.)
  static constexpr int B_STAGES = 5, B_AHEAD = 2;
  static_assert(B_AHEAD <= B_STAGES - 2, "a weight slot is refilled only after its release");
  static constexpr int A_BYTES = 64 * BK * 2;  // one warpgroup's rows of one step
  static constexpr int B_BYTES = BN * BK * 2;
  static constexpr int B_OFFSET = 2 * A_STAGES * A_BYTES;
  static constexpr int SLOT_STRIDE = 9;  // 8 corner slots per row, padded: conflict-free reads
  // Dynamic shared memory: 1024 bytes of alignment slack, the A tiles, the weight ring, its
  // barriers.
  static constexpr int SMEM_BYTES = 1024 + B_OFFSET + B_STAGES * B_BYTES + 2 * B_STAGES * 8;
};

// One row's sample along one axis: the two grid indices (clamped into the volume, already
// multiplied by the axis' stride in voxels) and their weights (0 outside the volume).
struct AxisPair {
  int offset[2];
  float weight[2];
};

// The (t, y, x) pairs of one row at one tap; `moves` has bit 2/1/0 set when the +1 index along
// t/y/x weighs something (the sample is off the grid along that axis).
struct RowSample {
  AxisPair axis[3];
  unsigned moves;
};

// `v` is the row's voxel state (Taps::voxel), `valid` false for rows past the last voxel.
template <typename Taps>
__device__ __forceinline__ RowSample sample_row(const Taps& taps, const typename Taps::Voxel& v,
                                                bool valid, int64_t g, int k) {
  const ConvShape& s = taps.shape;
  const int64_t sizes[3] = {s.depth, s.height, s.width};
  const int64_t strides[3] = {s.height * s.width, s.width, 1};
  float c[3] = {0.0f, 0.0f, 0.0f}, m = 0.0f;
  if (valid) {
    const auto coord = taps.coord(v, g, k);
    // A sample that touches nothing is 0: the origin's corners with modulation 0.
    if (trilinear_touches(coord.v[0], coord.v[1], coord.v[2], s.depth, s.height, s.width)) {
#pragma unroll
      for (int a = 0; a < 3; ++a) c[a] = coord.v[a];
      m = static_cast<float>(taps.modulation(v, g, k));
    }
  }
  RowSample out;
  out.moves = 0;
#pragma unroll
  for (int a = 0; a < 3; ++a) {
    const auto axis = trilinear_axis(c[a], static_cast<int>(sizes[a]));
    const int stride = static_cast<int>(strides[a]);
    // A neighbour outside gets weight 0 and the other neighbour's offset (one of the two is
    // inside): its load stays in bounds and in a cache line the row reads anyway.
    out.axis[a].offset[0] = (axis.inside[0] ? axis.lower : axis.lower + 1) * stride;
    out.axis[a].offset[1] = (axis.inside[1] ? axis.lower + 1 : axis.lower) * stride;
    out.axis[a].weight[0] = axis.inside[0] ? axis_weight(axis.frac, 0) : 0.0f;
    out.axis[a].weight[1] = axis.inside[1] ? axis_weight(axis.frac, 1) : 0.0f;
    out.moves |= static_cast<unsigned>(out.axis[a].weight[1] != 0.0f) << (2 - a);
  }
  // Modulation folded into the t weights; the products below then carry it.
  out.axis[0].weight[0] *= m;
  out.axis[0].weight[1] *= m;
  return out;
}

// Corner q = dt·4 + dy·2 + dx of the slots kept when the axes in MOVES move: slot i takes the
// i-th subset of MOVES in increasing order (pdep of i into MOVES).
__host__ __device__ constexpr int slot_corner(int i, int moves) {
  int q = 0, bit = 0;
  for (int a = 0; a < 3; ++a) {
    if (moves & (1 << a)) {
      q |= ((i >> bit) & 1) << a;
      ++bit;
    }
  }
  return q;
}

template <int MOVES>
__device__ __forceinline__ void fill_slots(const RowSample& rs, int2* slots) {
  constexpr int COUNT = 1 << ((MOVES & 1) + ((MOVES >> 1) & 1) + ((MOVES >> 2) & 1));
#pragma unroll
  for (int i = 0; i < COUNT; ++i) {
    const int q = slot_corner(i, MOVES), dt = q >> 2, dy = (q >> 1) & 1, dx = q & 1;
    const int voxel = rs.axis[0].offset[dt] + rs.axis[1].offset[dy] + rs.axis[2].offset[dx];
    const float weight = rs.axis[0].weight[dt] * rs.axis[1].weight[dy] * rs.axis[2].weight[dx];
    slots[i] = make_int2(voxel, __float_as_int(weight));
  }
}

// Writes the row's live corners (voxel offset, weight) to `slots` when `write`; returns how many
// there are. `moves` is the same in every lane of the warp.
__device__ __forceinline__ int fill_slots(unsigned moves, const RowSample& rs, int2* slots,
                                          bool write) {
  const int count = 1 << __popc(moves);
  if (!write) return count;
  switch (moves) {
    case 0: fill_slots<0>(rs, slots); break;
    case 1: fill_slots<1>(rs, slots); break;
    case 2: fill_slots<2>(rs, slots); break;
    case 3: fill_slots<3>(rs, slots); break;
    case 4: fill_slots<4>(rs, slots); break;
    case 5: fill_slots<5>(rs, slots); break;
    case 6: fill_slots<6>(rs, slots); break;
    default: fill_slots<7>(rs, slots);
  }
  return count;
}

// This thread's 8 channels of step-slice `c_first` for its two rows, interpolated over the COUNT
// corners in `slots` (the warp's 16 rows × SLOT_STRIDE) and stored into the warpgroup's A tile.
// All 2·COUNT loads are issued before any is used.
template <int COUNT, typename scalar_t>
__device__ __forceinline__ void gather_rows(const scalar_t* const (&row_base)[2],
                                            const int2* slots, const int (&warp_row)[2],
                                            int64_t channels, int64_t c_first, uint8_t* a_tile,
                                            const int (&tile_row)[2], int chunk) {
  using T = HopperTile;
  uint4 raw[2][COUNT];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const scalar_t* base = row_base[rr] + c_first;
    const int* voxel = reinterpret_cast<const int*>(slots + warp_row[rr] * T::SLOT_STRIDE);
#pragma unroll
    for (int i = 0; i < COUNT; ++i) {
      raw[rr][i] = __ldg(reinterpret_cast<const uint4*>(base + voxel[2 * i] * channels));
    }
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const float* weight = reinterpret_cast<const float*>(slots + warp_row[rr] * T::SLOT_STRIDE);
    float acc[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = 0.0f;
#pragma unroll
    for (int i = 0; i < COUNT; ++i) {
      const float w = weight[2 * i + 1];
      float vals[8];
      unpack16<scalar_t>(raw[rr][i], vals);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] = fmaf(w, vals[e], acc[e]);
    }
    uint4 packed;
    packed.x = MmaType<scalar_t>::pack(acc[0], acc[1]);
    packed.y = MmaType<scalar_t>::pack(acc[2], acc[3]);
    packed.z = MmaType<scalar_t>::pack(acc[4], acc[5]);
    packed.w = MmaType<scalar_t>::pack(acc[6], acc[7]);
    *reinterpret_cast<uint4*>(a_tile + hopper::sw64_offset(tile_row[rr], chunk)) = packed;
  }
}

// The step whose weight tile is copied next, and where it goes in the ring (counters instead
// of divisions: a step costs only a few hundred instructions).
struct WeightCursor {
  unsigned step = 0, slot = 0, round = 0;  // ring slot and how often the ring wrapped
  unsigned tap = 0, slice = 0;             // tap = group · 27 + k; slice of 32 channels

  __device__ void advance(unsigned slices, unsigned stages) {
    ++step;
    if (++slice == slices) {
      slice = 0;
      ++tap;
    }
    if (++slot == stages) {
      slot = 0;
      ++round;
    }
  }
};

// The cursor's weight tile (256 output channels × 32 channels of one tap) into its ring slot
// by the copy engine, 64-byte swizzled as the MMAs read it; rows past C_out arrive as zeros.
// One thread issues it; the slot's `full` barrier completes when the bytes have landed.
__device__ __forceinline__ void load_weight_step(const CUtensorMap& weight_map, int64_t channels,
                                                 int64_t group_channels, int64_t o0,
                                                 const WeightCursor& at, uint8_t* b_ring,
                                                 uint64_t* full) {
  using T = HopperTile;
  const unsigned g = at.tap / 27, k = at.tap - g * 27;
  const int64_t column = k * channels + g * group_channels + int64_t(at.slice) * T::BK;
  hopper::mbarrier_arrive_expect(&full[at.slot], T::B_BYTES);
  hopper::tma_load_2d(b_ring + at.slot * T::B_BYTES, &weight_map, static_cast<int>(column),
                      static_cast<int>(o0), &full[at.slot]);
}

template <typename scalar_t, typename Taps>
__global__ void __launch_bounds__(HopperTile::THREADS, 1)
    hopper_forward_kernel(const scalar_t* __restrict__ x, Layout xl, const Taps taps,
                          const __grid_constant__ CUtensorMap weight_map,
                          const scalar_t* __restrict__ bias, scalar_t* __restrict__ out,
                          Layout ol, bool pair_stores) {
#ifdef D2_SM90A
  using T = HopperTile;
  using mma_t = typename MmaType<scalar_t>::type;
  extern __shared__ uint8_t smem_raw[];
  __shared__ typename Taps::Voxel voxels[T::BM];  // per-row state, read at every tap
  __shared__ int2 slot_table[T::THREADS / 32][16 * T::SLOT_STRIDE];  // per warp: its rows' corners
  // The swizzle pattern repeats every 512 bytes of shared address: tiles start 1024-aligned.
  uint8_t* tiles = smem_raw + ((1024u - (hopper::smem_address(smem_raw) & 1023u)) & 1023u);
  uint8_t* b_ring = tiles + T::B_OFFSET;
  uint64_t* full = reinterpret_cast<uint64_t*>(b_ring + T::B_STAGES * T::B_BYTES);
  uint64_t* empty = full + T::B_STAGES;

  const ConvShape& s = taps.shape;
  const int64_t channel_blocks = (s.out_channels + T::BN - 1) / T::BN;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) / channel_blocks * T::BM;
  const int64_t o0 = static_cast<int64_t>(blockIdx.x) % channel_blocks * T::BN;
  const int64_t cg = s.group_channels(), rows_total = s.batch * s.out_plane();
  const unsigned slices = static_cast<unsigned>(cg / T::BK);
  const unsigned total_steps = static_cast<unsigned>(s.groups) * 27u * slices;

  const int half = threadIdx.x / 128, warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
  const int chunk = lane % 4;
  // This thread's two rows within its warp's 16 and its warpgroup's 64 (also the accumulator
  // rows it holds).
  const int warp_row[2] = {lane / 4, lane / 4 + 8};
  const int tile_row[2] = {warp * 16 + warp_row[0], warp * 16 + warp_row[1]};
  int2* slots = slot_table[threadIdx.x / 32];

  if (threadIdx.x < T::BM && row0 + threadIdx.x < rows_total) {
    const int64_t r = row0 + threadIdx.x, n = r / s.out_plane();
    voxels[threadIdx.x] = taps.voxel(n, r - n * s.out_plane());
  }
  if (threadIdx.x == 0) {
    for (int i = 0; i < T::B_STAGES; ++i) {
      hopper::mbarrier_init(&full[i], 1);  // the copying thread's arrival, plus the bytes
      hopper::mbarrier_init(&empty[i], T::THREADS / 32);
    }
  }
  __syncthreads();
  WeightCursor copy;  // thread 0 copies the weight tiles, B_AHEAD steps ahead of the products
  if (threadIdx.x == 0) {
    for (; copy.step < T::B_AHEAD && copy.step < total_steps; copy.advance(slices, T::B_STAGES)) {
      load_weight_step(weight_map, s.channels, cg, o0, copy, b_ring, full);
    }
  }

  const scalar_t* row_base[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t r = row0 + half * 64 + tile_row[rr];
    row_base[rr] = x + (r < rows_total ? r / s.out_plane() : 0) * xl.batch + chunk * 8;
  }
  // The row whose corners this lane computes at each tap (lanes 16..31 repeat 0..15).
  const int own_row = half * 64 + warp * 16 + lane % 16;
  const bool own_valid = row0 + own_row < rows_total;
  float acc[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) acc[i] = 0.0f;
  mma_t* tag = nullptr;
  uint8_t* a_tiles = tiles + half * T::A_STAGES * T::A_BYTES;

  unsigned step = 0, slot = 0, round = 0, a_index = 0;  // slot, round: of the B ring
  for (int64_t g = 0; g < s.groups; ++g) {
    for (int k = 0; k < 27; ++k) {
      const RowSample rs = sample_row(taps, voxels[own_row], own_valid, g, k);
      const unsigned moves = __reduce_or_sync(0xffffffffu, rs.moves);
      __syncwarp();  // every lane is done with the previous tap's slots
      const int count = fill_slots(moves, rs, slots + (lane % 16) * T::SLOT_STRIDE, lane < 16);
      __syncwarp();

      for (unsigned slice = 0; slice < slices; ++slice, ++step) {
        // The products of step − 2 are done: its A tile may be refilled next step (the barrier
        // below orders that for the whole warpgroup) and its weight slot goes back to the ring.
        hopper::wgmma_wait<1>();
        if (step >= 2 && lane == 0) {
          hopper::mbarrier_arrive(&empty[slot >= 2 ? slot - 2 : slot + T::B_STAGES - 2]);
        }
        uint8_t* a_tile = a_tiles + a_index * T::A_BYTES;
        const int64_t c_first = g * cg + static_cast<int64_t>(slice) * T::BK;
        switch (count) {  // the same in every lane of the warp
          case 1:
            gather_rows<1>(row_base, slots, warp_row, s.channels, c_first, a_tile, tile_row,
                           chunk);
            break;
          case 2:
            gather_rows<2>(row_base, slots, warp_row, s.channels, c_first, a_tile, tile_row,
                           chunk);
            break;
          case 4:
            gather_rows<4>(row_base, slots, warp_row, s.channels, c_first, a_tile, tile_row,
                           chunk);
            break;
          default:
            gather_rows<8>(row_base, slots, warp_row, s.channels, c_first, a_tile, tile_row,
                           chunk);
        }
        hopper::fence_proxy_async();  // the A stores, for the MMAs
        hopper::named_barrier(1 + half, 128);  // the warpgroup's A tile is complete
        if (threadIdx.x == 0 && copy.step < total_steps) {
          hopper::mbarrier_wait(&empty[copy.slot], (copy.round & 1u) ^ 1u);
          load_weight_step(weight_map, s.channels, cg, o0, copy, b_ring, full);
          copy.advance(slices, T::B_STAGES);
        }
        hopper::mbarrier_wait(&full[slot], round & 1u);
        const uint64_t a_desc = hopper::sw64_descriptor(a_tile);
        const uint64_t b_desc = hopper::sw64_descriptor(b_ring + slot * T::B_BYTES);
        hopper::wgmma_fence();
        hopper::wgmma_m64n256k16(acc, a_desc, b_desc, step > 0, tag);
        hopper::wgmma_m64n256k16(acc, a_desc + 2, b_desc + 2, true, tag);
        hopper::wgmma_commit();
        if (++slot == T::B_STAGES) {
          slot = 0;
          ++round;
        }
        if (++a_index == T::A_STAGES) a_index = 0;
      }
    }
  }
  hopper::wgmma_wait<0>();

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t r = row0 + half * 64 + tile_row[h];
    if (r >= rows_total) continue;
    const int64_t n = r / s.out_plane(), p = r - n * s.out_plane();
    scalar_t* row_out = out + n * ol.batch + p * ol.voxel;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const int64_t o = o0 + j * 8 + 2 * (lane % 4);
      float v0 = acc[4 * j + 2 * h], v1 = acc[4 * j + 2 * h + 1];
      if (pair_stores && o + 1 < s.out_channels) {
        if (bias != nullptr) {
          v0 += static_cast<float>(bias[o]);
          v1 += static_cast<float>(bias[o + 1]);
        }
        *reinterpret_cast<uint32_t*>(row_out + o) = MmaType<scalar_t>::pack(v0, v1);
        continue;
      }
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        if (o + e >= s.out_channels) continue;
        const float b = bias != nullptr ? static_cast<float>(bias[o + e]) : 0.0f;
        row_out[(o + e) * ol.channel] = static_cast<scalar_t>((e == 0 ? v0 : v1) + b);
      }
    }
  }
#else
  __trap();
#endif
}

}  // namespace cuda
}  // namespace d2bench
