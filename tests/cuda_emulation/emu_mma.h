// Host stand-ins for the warp-level tensor-core primitives of mma.cuh (ldmatrix, mma.sync
// m16n8k16, cp.async), so the mma.sync kernels (the fused backward's two kernels, the forward)
// run in the emulation too. Each lane of a warp is a host thread: a collective publishes a
// pointer per lane, waits for the warp, reads the other lanes' data and waits again before
// anyone returns, so every lane gets the fragment the PTX instruction's layout gives it.
// cp.async copies at once; commit and wait have nothing left to wait for.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace d2bench {
namespace cuda {
namespace emulated {

// The addresses (or register arrays) of all 32 lanes of the caller's warp, valid until
// warp_release(): lane l's entry is what lane l passed.
template <typename T>
inline T* const* warp_publish(T* mine) {
  emu::Block* b = emu::block;
  const int t = threadIdx.x, w = t / 32;
  b->slots[t] = reinterpret_cast<uint64_t>(mine);
  b->warp[w]->arrive_and_wait();
  return reinterpret_cast<T* const*>(&b->slots[w * 32]);
}
inline void warp_release() { emu::block->warp[threadIdx.x / 32]->arrive_and_wait(); }

inline uint16_t b16_at(const void* row, int column) {
  uint16_t v;
  std::memcpy(&v, static_cast<const unsigned char*>(row) + 2 * column, 2);
  return v;
}
inline uint32_t pair(uint16_t lo, uint16_t hi) { return lo | (static_cast<uint32_t>(hi) << 16); }

// ldmatrix .x4: lanes 8j .. 8j + 7 give the rows of 8×8 matrix j; lane t receives row t/4,
// columns 2(t%4) and 2(t%4) + 1 of each (transposed: column t/4, rows 2(t%4) and 2(t%4) + 1).
inline void ldmatrix(uint32_t* r, const void* smem, bool transposed) {
  const void* const* rows = warp_publish(smem);
  const int lane = threadIdx.x % 32, group = lane / 4, pair_index = lane % 4;
  for (int j = 0; j < 4; ++j) {
    if (transposed) {
      r[j] = pair(b16_at(rows[8 * j + 2 * pair_index], group),
                  b16_at(rows[8 * j + 2 * pair_index + 1], group));
    } else {
      r[j] = pair(b16_at(rows[8 * j + group], 2 * pair_index),
                  b16_at(rows[8 * j + group], 2 * pair_index + 1));
    }
  }
  warp_release();
}

template <typename mma_t>
inline float to_float(uint16_t bits) {
  if constexpr (std::is_same_v<mma_t, __half>) {
    return __half2float(__half{bits});
  } else {
    return static_cast<float>(c10::BFloat16(bits, c10::BFloat16::from_bits()));
  }
}

// One lane's two 16-bit values of a 32-bit fragment register.
template <typename mma_t>
inline float half_of(uint32_t reg, int which) {
  return to_float<mma_t>(static_cast<uint16_t>(which ? reg >> 16 : reg & 0xFFFFu));
}

// The fragments of mma.m16n8k16 (row.col): lane t = 4g + i holds A rows g and g + 8 at columns
// 2i, 2i + 1 (+8 in registers 2, 3), B columns g at rows 2i, 2i + 1 (+8 in register 1), and C
// rows g, g + 8 at columns 2i, 2i + 1.
template <typename mma_t>
inline void mma(float* c, const uint32_t* a, const uint32_t* b) {
  struct Fragments {
    uint32_t a[4], b[2];
  } mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  Fragments* const* lanes = warp_publish(&mine);
  const auto a_at = [&](int row, int k) {
    const Fragments& f = *lanes[(row % 8) * 4 + (k % 8) / 2];
    return half_of<mma_t>(f.a[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k % 2);
  };
  const auto b_at = [&](int k, int column) {
    const Fragments& f = *lanes[column * 4 + (k % 8) / 2];
    return half_of<mma_t>(f.b[k >= 8 ? 1 : 0], k % 2);
  };
  const int lane = threadIdx.x % 32, group = lane / 4, pair_index = lane % 4;
  float sums[4];
  for (int e = 0; e < 4; ++e) {
    const int row = group + (e >= 2 ? 8 : 0), column = 2 * pair_index + e % 2;
    float sum = 0.0f;
    for (int k = 0; k < 16; ++k) sum += a_at(row, k) * b_at(k, column);
    sums[e] = sum;
  }
  warp_release();
  for (int e = 0; e < 4; ++e) c[e] += sums[e];
}

}  // namespace emulated

inline void ldmatrix_x4(uint32_t* r, const void* smem) { emulated::ldmatrix(r, smem, false); }
inline void ldmatrix_x4_trans(uint32_t* r, const void* smem) {
  emulated::ldmatrix(r, smem, true);
}
inline void mma_16816(float* c, const uint32_t* a, const uint32_t* b, __nv_bfloat16*) {
  emulated::mma<__nv_bfloat16>(c, a, b);
}
inline void mma_16816(float* c, const uint32_t* a, const uint32_t* b, __half*) {
  emulated::mma<__half>(c, a, b);
}
inline void cp_async16(void* smem, const void* gmem, bool valid) {
  if (valid) {
    std::memcpy(smem, gmem, 16);
  } else {
    std::memset(smem, 0, 16);
  }
}
inline void cp_async_commit() {}
inline void cp_async_wait_all() {}

}  // namespace cuda
}  // namespace d2bench
