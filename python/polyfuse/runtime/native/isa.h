// The instruction encoding the emulator executes.
//
// Mirrors python/polyfuse/runtime/isa.py, which is the single source of truth: change a number
// there first, then here. The records arrive as a C-contiguous int64 table, so a record is read by
// reinterpreting its words as the structs below; the static_asserts pin them to the word offsets.
#pragma once

#include <cstddef>
#include <cstdint>

namespace polyfuse::isa {

constexpr int kRecordWords = 96;
constexpr int kViewWords = 20;
constexpr int kViewBase = 16;
constexpr int kMaxDims = 6;
constexpr int kMaxLoopDepth = 8;
constexpr int kNumViews = 4;

constexpr int64_t kFlagAccumulate = 1;

enum Opcode : int64_t {
  kLoop = 0,
  kEndLoop = 1,
  kDma = 2,
  kWait = 3,
  kMatmul = 4,
  kVector = 5,
  kAlloc = 6,
  kFree = 7,
};
constexpr int64_t kNumOpcodes = 8;

enum Memory : int64_t {
  kNone = 0,
  kSpm = 1,
  kDram = 2,
  kImm = 3,
};
constexpr int64_t kNumMemories = 4;

enum VectorKind : int64_t {
  kCopy = 0,
  kAdd = 1,
  kSub = 2,
  kMul = 3,
  kDiv = 4,
  kMax = 5,
  kMin = 6,
  kPow = 7,
  kNeg = 8,
  kExp = 9,
  kLog = 10,
  kTanh = 11,
  kErf = 12,
  kSqrt = 13,
  kRsqrt = 14,
  kAbs = 15,
  kFma = 16,
  kSelect = 17,
  kCmpOgt = 18,
  kCmpOge = 19,
  kCmpOlt = 20,
  kCmpOle = 21,
  kCmpOeq = 22,
  kCmpOne = 23,
  kCmpUgt = 24,
  kCmpUge = 25,
  kCmpUlt = 26,
  kCmpUle = 27,
  kCmpUeq = 28,
  kCmpUne = 29,
  kLog1p = 30,
  kExpm1 = 31,
  kSin = 32,
  kCos = 33,
  kFloor = 34,
  kCeil = 35,
  kRecip = 36,
  kSigmoid = 37,
  kMaxnum = 38,
  kMinnum = 39,
};
constexpr int64_t kNumVectorKinds = 40;

// Number of sources a vector kind reads (isa.VECTOR_ARITY); -1 for an unknown kind.
constexpr int vector_arity(int64_t kind) {
  if (kind < 0 || kind >= kNumVectorKinds) return -1;
  if (kind == kFma || kind == kSelect) return 3;
  if ((kind >= kAdd && kind <= kPow) || (kind >= kCmpOgt && kind <= kCmpUne) || kind == kMaxnum ||
      kind == kMinnum)
    return 2;
  return 1;
}

struct ViewWords {
  int64_t memory;
  int64_t buffer;
  int64_t c0;
  int64_t coeffs[kMaxLoopDepth];
  int64_t strides[kMaxDims];
  int64_t reserved[3];
};

struct Record {
  int64_t opcode;
  int64_t sub;
  int64_t shape[kMaxDims];
  int64_t token;
  int64_t flags;
  int64_t aux;
  int64_t location;
  int64_t group;  // operator group id (statistics and trace only)
  int64_t reserved[3];
  ViewWords views[kNumViews];
};

static_assert(sizeof(ViewWords) == kViewWords * 8);
static_assert(offsetof(ViewWords, memory) == 0 * 8);
static_assert(offsetof(ViewWords, buffer) == 1 * 8);
static_assert(offsetof(ViewWords, c0) == 2 * 8);
static_assert(offsetof(ViewWords, coeffs) == 3 * 8);
static_assert(offsetof(ViewWords, strides) == 11 * 8);

static_assert(sizeof(Record) == kRecordWords * 8);
static_assert(offsetof(Record, opcode) == 0 * 8);
static_assert(offsetof(Record, sub) == 1 * 8);
static_assert(offsetof(Record, shape) == 2 * 8);
static_assert(offsetof(Record, token) == 8 * 8);
static_assert(offsetof(Record, flags) == 9 * 8);
static_assert(offsetof(Record, aux) == 10 * 8);
static_assert(offsetof(Record, location) == 11 * 8);
static_assert(offsetof(Record, group) == 12 * 8);
static_assert(offsetof(Record, views) == kViewBase * 8);

}  // namespace polyfuse::isa
