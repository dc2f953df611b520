/*
 * Every op of OPS.md through the C ABI on the CPU backend ("reference" when "cpu" is not
 * available in this build), checked against values computed here in C from the rules of OPS.md.
 * Also: backend listing, memory, external wrapping, and the error paths (NULL pointers, bad
 * descriptors, wrong devices, overlapping outputs). Built and run by ffi/tests/c_abi.rs.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moehal.h"

static int failures = 0;
static int checks = 0;

#define CHECK(cond, ...)                                          \
  do {                                                            \
    checks++;                                                     \
    if (!(cond)) {                                                \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);        \
      fprintf(stderr, __VA_ARGS__);                               \
      fprintf(stderr, "\n");                                      \
      failures++;                                                 \
    }                                                             \
  } while (0)

#define OK(call)                                                                                 \
  do {                                                                                           \
    moehal_status s_ = (call);                                                                   \
    checks++;                                                                                    \
    if (s_ != MOEHAL_OK) {                                                                       \
      fprintf(stderr, "FAIL %s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call, moehal_status_name(s_), \
              moehal_last_error());                                                              \
      failures++;                                                                                \
    }                                                                                            \
  } while (0)

/* Expect `status` and a last-error message containing `needle`. */
#define EXPECT_ERR(call, status, needle)                                                              \
  do {                                                                                                \
    moehal_status s_ = (call);                                                                        \
    checks++;                                                                                         \
    if (s_ != (status) || strstr(moehal_last_error(), (needle)) == NULL) {                            \
      fprintf(stderr, "FAIL %s:%d: %s -> %s (%s), expected %s with \"%s\"\n", __FILE__, __LINE__, #call, \
              moehal_status_name(s_), moehal_last_error(), moehal_status_name(status), (needle));      \
      failures++;                                                                                     \
    }                                                                                                 \
  } while (0)

/* A DLTensor with its shape stored inline. Do not copy after tset (shape points into it). */
typedef struct {
  DLTensor t;
  int64_t shape[4];
} Tensor;

static const DLDataType F32 = {kDLFloat, 32, 1};
static const DLDataType F16 = {kDLFloat, 16, 1};
static const DLDataType BF16 = {kDLBfloat, 16, 1};
static const DLDataType I32 = {kDLInt, 32, 1};
static const DLDataType I64 = {kDLInt, 64, 1};
static const DLDataType U8 = {kDLUInt, 8, 1};
static const DLDataType I8 = {kDLInt, 8, 1};

static void tset(Tensor* t, void* data, DLDataType dt, int ndim, int64_t d0, int64_t d1, int64_t d2) {
  memset(t, 0, sizeof *t);
  t->shape[0] = d0;
  t->shape[1] = d1;
  t->shape[2] = d2;
  t->t.data = data;
  t->t.device.device_type = kDLCPU;
  t->t.device.device_id = 0;
  t->t.ndim = ndim;
  t->t.dtype = dt;
  t->t.shape = t->shape;
  t->t.strides = NULL;
  t->t.byte_offset = 0;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* [0, 1) */
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float frand(float lo, float hi) { return (float)(lo + (hi - lo) * urand()); }

static float nanf_poison(void) { return NAN; }

static int close_to(double got, double want, double rel) { return fabs(got - want) <= rel * (1.0 + fabs(want)); }

/* ------------------------------------------------------------------------------------------- */

static void test_grouped_gemm(const moehal_backend* be) {
  enum { M = 6, K = 3, N = 4, G = 3 };
  int64_t group_end[G] = {2, 2, 5}; /* group 1 empty; row 5 is past the last group: untouched */
  float x[M * K], w[G * N * K], wkn[G * K * N], bias[G * N], rs[M], y[M * N];
  for (int i = 0; i < M * K; i++) x[i] = frand(-1, 1);
  for (int i = 0; i < G * N * K; i++) w[i] = frand(-1, 1);
  for (int g = 0; g < G; g++)
    for (int n = 0; n < N; n++)
      for (int k = 0; k < K; k++) wkn[(g * K + k) * N + n] = w[(g * N + n) * K + k];
  for (int i = 0; i < G * N; i++) bias[i] = frand(-1, 1);
  for (int i = 0; i < M; i++) rs[i] = frand(0, 1);

  for (int variant = 0; variant < 4; variant++) {
    int kn = variant & 1, with_opts = variant >> 1;
    Tensor tx, tw, tg, tb, tr, ty;
    tset(&tx, x, F32, 2, M, K, 0);
    if (kn)
      tset(&tw, wkn, F32, 3, G, K, N);
    else
      tset(&tw, w, F32, 3, G, N, K);
    tset(&tg, group_end, I64, 1, G, 0, 0);
    tset(&tb, bias, F32, 2, G, N, 0);
    tset(&tr, rs, F32, 1, M, 0, 0);
    tset(&ty, y, F32, 2, M, N, 0);
    for (int i = 0; i < M * N; i++) y[i] = nanf_poison();
    OK(moehal_grouped_gemm(be, &tx.t, &tw.t, kn ? MOEHAL_LAYOUT_KN : MOEHAL_LAYOUT_NK, &tg.t,
                           with_opts ? &tr.t : NULL, with_opts ? &tb.t : NULL, &ty.t));
    int64_t start = 0;
    for (int g = 0; g < G; g++) {
      for (int64_t r = start; r < group_end[g]; r++)
        for (int n = 0; n < N; n++) {
          double acc = 0;
          for (int k = 0; k < K; k++) acc += (double)x[r * K + k] * w[(g * N + n) * K + k];
          if (with_opts) acc = rs[r] * (acc + bias[g * N + n]);
          CHECK(close_to(y[r * N + n], acc, 1e-5), "grouped_gemm variant %d y[%ld,%d] = %g, want %g", variant,
                (long)r, n, y[r * N + n], acc);
        }
      start = group_end[g];
    }
    for (int n = 0; n < N; n++) CHECK(isnan(y[5 * N + n]), "grouped_gemm wrote guard row 5");
  }

  /* A decreasing group_end is rejected and nothing is written. */
  int64_t bad_end[G] = {3, 2, 5};
  Tensor tx, tw, tg, ty;
  tset(&tx, x, F32, 2, M, K, 0);
  tset(&tw, w, F32, 3, G, N, K);
  tset(&tg, bad_end, I64, 1, G, 0, 0);
  tset(&ty, y, F32, 2, M, N, 0);
  for (int i = 0; i < M * N; i++) y[i] = nanf_poison();
  EXPECT_ERR(moehal_grouped_gemm(be, &tx.t, &tw.t, MOEHAL_LAYOUT_NK, &tg.t, NULL, NULL, &ty.t),
             MOEHAL_INVALID_ARGUMENT, "group_end");
  int untouched = 1;
  for (int i = 0; i < M * N; i++) untouched &= isnan(y[i]);
  CHECK(untouched, "grouped_gemm wrote output after a validation error");
  EXPECT_ERR(moehal_grouped_gemm(be, &tx.t, &tw.t, 7, &tg.t, NULL, NULL, &ty.t), MOEHAL_INVALID_ARGUMENT,
             "layout");
}

/* ------------------------------------------------------------------------------------------- */

/* C restatement of OPS.md §2 for finite logits. */
static void router_ref(const float* logits, const float* bias, int T, int E, const moehal_router_config* c,
                       int32_t* ids, float* weights, int64_t* counts) {
  for (int e = 0; e < E; e++) counts[e] = 0;
  for (int t = 0; t < T; t++) {
    double s[64], sel[64];
    const float* l = logits + t * E;
    double mx = -INFINITY, den = 0;
    for (int e = 0; e < E; e++) mx = l[e] > mx ? l[e] : mx;
    for (int e = 0; e < E; e++) den += exp(l[e] - mx);
    for (int e = 0; e < E; e++) {
      double v = l[e];
      if (c->scoring == MOEHAL_SCORING_SOFTMAX)
        s[e] = exp(v - mx) / den;
      else if (c->scoring == MOEHAL_SCORING_SIGMOID)
        s[e] = 1.0 / (1.0 + exp(-v));
      else
        s[e] = sqrt(log1p(exp(v)));
      sel[e] = s[e] + (bias ? bias[e] : 0.0);
    }
    if (c->n_group > 1) {
      int per = E / (int)c->n_group;
      double gs[64];
      int keep[64] = {0};
      for (int g = 0; g < c->n_group; g++) {
        double a = -INFINITY, b = -INFINITY;
        for (int i = 0; i < per; i++) {
          double v = sel[g * per + i];
          if (v > a) {
            b = a;
            a = v;
          } else if (v > b) {
            b = v;
          }
        }
        gs[g] = c->group_score == MOEHAL_GROUP_SCORE_TOP2_SUM ? a + b : a;
      }
      for (int kept = 0; kept < c->topk_group; kept++) {
        int best = -1;
        for (int g = 0; g < c->n_group; g++)
          if (!keep[g] && (best < 0 || gs[g] > gs[best])) best = g;
        keep[best] = 1;
      }
      for (int e = 0; e < E; e++)
        if (!keep[e / per]) sel[e] = -INFINITY;
    }
    int taken[64] = {0};
    double sum = 0;
    for (int j = 0; j < c->k; j++) {
      int best = -1;
      for (int e = 0; e < E; e++)
        if (!taken[e] && (best < 0 || sel[e] > sel[best])) best = e;
      taken[best] = 1;
      ids[t * c->k + j] = best;
      weights[t * c->k + j] = (float)s[best];
      sum += s[best];
      counts[best]++;
    }
    for (int j = 0; j < c->k; j++) {
      double wv = weights[t * c->k + j];
      if (c->renormalize) wv = wv / (sum + 1e-20);
      weights[t * c->k + j] = (float)(wv * c->routed_scaling_factor);
    }
  }
}

static void test_router_topk(const moehal_backend* be) {
  enum { T = 5, E = 8 };
  float logits[T * E], bias[E];
  for (int i = 0; i < T * E; i++) logits[i] = frand(-3, 3);
  for (int i = 0; i < E; i++) bias[i] = frand(-0.5f, 0.5f);
  moehal_router_config cfgs[3];
  memset(cfgs, 0, sizeof cfgs);
  /* Qwen3 / Mixtral style */
  cfgs[0].k = 2;
  cfgs[0].scoring = MOEHAL_SCORING_SOFTMAX;
  cfgs[0].renormalize = 1;
  cfgs[0].routed_scaling_factor = 1.0f;
  /* DeepSeek-V3 style: sigmoid + bias, 4 groups keep 2, top2_sum, scale 2.5 */
  cfgs[1].k = 3;
  cfgs[1].scoring = MOEHAL_SCORING_SIGMOID;
  cfgs[1].group_score = MOEHAL_GROUP_SCORE_TOP2_SUM;
  cfgs[1].n_group = 4;
  cfgs[1].topk_group = 2;
  cfgs[1].renormalize = 1;
  cfgs[1].routed_scaling_factor = 2.5f;
  /* DeepSeek-V4 style: sqrt_softplus + bias, max group score, no renormalize, scale 1.5 */
  cfgs[2].k = 2;
  cfgs[2].scoring = MOEHAL_SCORING_SQRT_SOFTPLUS;
  cfgs[2].group_score = MOEHAL_GROUP_SCORE_MAX;
  cfgs[2].n_group = 2;
  cfgs[2].topk_group = 1;
  cfgs[2].renormalize = 0;
  cfgs[2].routed_scaling_factor = 1.5f;
  for (int ci = 0; ci < 3; ci++) {
    const moehal_router_config* c = &cfgs[ci];
    int k = (int)c->k;
    int32_t ids[T * 8], want_ids[T * 8];
    float w[T * 8], want_w[T * 8];
    int64_t counts[E], want_counts[E];
    Tensor tl, tb, ti, tw, tc;
    tset(&tl, logits, F32, 2, T, E, 0);
    tset(&tb, bias, F32, 1, E, 0, 0);
    tset(&ti, ids, I32, 2, T, k, 0);
    tset(&tw, w, F32, 2, T, k, 0);
    tset(&tc, counts, I64, 1, E, 0, 0);
    const float* b = ci == 0 ? NULL : bias;
    OK(moehal_router_topk(be, &tl.t, b ? &tb.t : NULL, c, &ti.t, &tw.t, &tc.t));
    router_ref(logits, b, T, E, c, want_ids, want_w, want_counts);
    for (int i = 0; i < T * k; i++) {
      CHECK(ids[i] == want_ids[i], "router config %d ids[%d] = %d, want %d", ci, i, ids[i], want_ids[i]);
      CHECK(fabs(w[i] - want_w[i]) <= 1e-5, "router config %d weights[%d] = %g, want %g", ci, i, w[i], want_w[i]);
    }
    for (int e = 0; e < E; e++)
      CHECK(counts[e] == want_counts[e], "router config %d counts[%d] = %ld, want %ld", ci, e, (long)counts[e],
            (long)want_counts[e]);
    /* int64 ids out (what torch.topk gives an engine): the same ids, sign-extended. */
    int64_t ids64[T * 8];
    for (int i = 0; i < T * 8; i++) ids64[i] = INT64_MIN;
    Tensor ti64;
    tset(&ti64, ids64, I64, 2, T, k, 0);
    OK(moehal_router_topk(be, &tl.t, b ? &tb.t : NULL, c, &ti64.t, &tw.t, NULL));
    for (int i = 0; i < T * k; i++)
      CHECK(ids64[i] == want_ids[i], "router config %d int64 ids[%d] = %ld, want %d", ci, i, (long)ids64[i],
            want_ids[i]);
    CHECK(ids64[T * k] == INT64_MIN, "int64 ids: a byte past the output changed");
  }
  /* Validation: k > E, wrong dtype of logits. */
  moehal_router_config bad = cfgs[0];
  bad.k = E + 1;
  int32_t ids[T * 9];
  float w[T * 9];
  Tensor tl, ti, tw;
  tset(&tl, logits, F32, 2, T, E, 0);
  tset(&ti, ids, I32, 2, T, E + 1, 0);
  tset(&tw, w, F32, 2, T, E + 1, 0);
  EXPECT_ERR(moehal_router_topk(be, &tl.t, NULL, &bad, &ti.t, &tw.t, NULL), MOEHAL_INVALID_ARGUMENT, "k");
  EXPECT_ERR(moehal_router_topk(be, &tl.t, NULL, NULL, &ti.t, &tw.t, NULL), MOEHAL_INVALID_ARGUMENT, "config");
  tset(&ti, ids, I32, 2, T, 2, 0);
  tset(&tw, w, F32, 2, T, 2, 0);
  tl.t.dtype = I32;
  EXPECT_ERR(moehal_router_topk(be, &tl.t, NULL, &cfgs[0], &ti.t, &tw.t, NULL), MOEHAL_INVALID_ARGUMENT, "logits");
}

/* ------------------------------------------------------------------------------------------- */

/* §2 hash routing: ids are the tid2eid rows of the token ids; weights the scores of those ids
 * (sigmoid here), renormalized over the k slots, scaled; a NaN logit weighs 0 and keeps its id.
 * The group fields of the config are ignored even when invalid for top-k routing. */
static void test_router_hash(const moehal_backend* be) {
  enum { T = 4, E = 6, V = 5, K = 3 };
  float logits[T * E];
  for (int i = 0; i < T * E; i++) logits[i] = frand(-3, 3);
  logits[2 * E + 1] = NAN; /* token 2 reads row 0 = {0, 1, 2}: slot 1 weighs 0, keeps id 1 */
  int32_t table[V * K] = {0, 1, 2, 5, 5, 3, 4, 0, 1, 2, 2, 2, 3, 4, 5};
  int64_t tokens[T] = {1, 3, 0, 2};
  moehal_router_config c;
  memset(&c, 0, sizeof c);
  c.k = K;
  c.scoring = MOEHAL_SCORING_SIGMOID;
  c.n_group = 4; /* does not divide E: ignored */
  c.topk_group = 0;
  c.group_score = 99;
  c.renormalize = 1;
  c.routed_scaling_factor = 1.5f;
  int32_t ids[T * K];
  float w[T * K];
  int64_t counts[E];
  Tensor tl, tt, tx, ti, tw, tc;
  tset(&tl, logits, F32, 2, T, E, 0);
  tset(&tt, table, I32, 2, V, K, 0);
  tset(&tx, tokens, I64, 1, T, 0, 0);
  tset(&ti, ids, I32, 2, T, K, 0);
  tset(&tw, w, F32, 2, T, K, 0);
  tset(&tc, counts, I64, 1, E, 0, 0);
  OK(moehal_router_hash(be, &tl.t, &tt.t, &tx.t, &c, &ti.t, &tw.t, &tc.t));
  int64_t want_counts[E] = {0};
  for (int t = 0; t < T; t++) {
    double s[K], sum = 0;
    for (int j = 0; j < K; j++) {
      int id = table[tokens[t] * K + j];
      CHECK(ids[t * K + j] == id, "hash ids[%d] = %d, want %d", t * K + j, ids[t * K + j], id);
      double l = logits[t * E + id];
      s[j] = isfinite(l) ? 1.0 / (1.0 + exp(-l)) : 0.0;
      sum += s[j];
      want_counts[id]++;
    }
    for (int j = 0; j < K; j++) {
      double want = s[j] / (sum + 1e-20) * 1.5;
      CHECK(fabs(w[t * K + j] - want) <= 1e-5, "hash weights[%d] = %g, want %g", t * K + j, w[t * K + j], want);
    }
  }
  for (int e = 0; e < E; e++)
    CHECK(counts[e] == want_counts[e], "hash counts[%d] = %ld, want %ld", e, (long)counts[e], (long)want_counts[e]);
  /* Token 0 reads row 1 = {5, 5, 3}: a repeated id is two slots; token 2's NaN slot. */
  CHECK(ids[0] == 5 && ids[1] == 5, "repeated id in a row is two slots");
  CHECK(ids[2 * K + 1] == 1 && w[2 * K + 1] == 0.0f, "NaN logit: id kept, weight 0");
  /* Value errors: token id outside [0, V), entry outside [0, E); nothing written. */
  int64_t bad_tokens[T] = {1, 5, 0, 2};
  tset(&tx, bad_tokens, I64, 1, T, 0, 0);
  for (int i = 0; i < T * K; i++) ids[i] = -7;
  EXPECT_ERR(moehal_router_hash(be, &tl.t, &tt.t, &tx.t, &c, &ti.t, &tw.t, &tc.t), MOEHAL_INVALID_ARGUMENT,
             "token_ids");
  CHECK(ids[0] == -7, "ids written on error");
  table[0] = E;
  tset(&tx, tokens, I64, 1, T, 0, 0);
  EXPECT_ERR(moehal_router_hash(be, &tl.t, &tt.t, &tx.t, &c, &ti.t, &tw.t, &tc.t), MOEHAL_INVALID_ARGUMENT,
             "tid2eid");
  CHECK(ids[0] == -7, "ids written on error");
  EXPECT_ERR(moehal_router_hash(be, &tl.t, &tt.t, &tx.t, NULL, &ti.t, &tw.t, &tc.t), MOEHAL_INVALID_ARGUMENT,
             "config");
}

/* ------------------------------------------------------------------------------------------- */

static void test_permute_swiglu_combine(const moehal_backend* be, int64_t* out_slot_row) {
  enum { T = 4, KK = 2, E = 3, H = 3 };
  int32_t ids[T * KK] = {0, 2, 1, -1, 2, 0, 0, 0};
  float x[T * H];
  for (int i = 0; i < T * H; i++) x[i] = frand(-1, 1);
  int64_t group_end[E], src_token[T * KK], slot_row[T * KK];
  float x_perm[T * KK * H];
  Tensor ti, tx, tg, ts, tr, tp;
  tset(&ti, ids, I32, 2, T, KK, 0);
  tset(&tx, x, F32, 2, T, H, 0);
  tset(&tg, group_end, I64, 1, E, 0, 0);
  tset(&ts, src_token, I64, 1, T * KK, 0, 0);
  tset(&tr, slot_row, I64, 2, T, KK, 0);
  tset(&tp, x_perm, F32, 2, T * KK, H, 0);
  OK(moehal_moe_permute(be, &ti.t, E, &tx.t, &tg.t, &ts.t, &tr.t, &tp.t));
  /* Expected: experts in order, within an expert rows by (t, j) ascending. */
  int64_t r = 0;
  for (int e = 0; e < E; e++) {
    for (int t = 0; t < T; t++)
      for (int j = 0; j < KK; j++)
        if (ids[t * KK + j] == e) {
          CHECK(slot_row[t * KK + j] == r, "slot_row[%d,%d] = %ld, want %ld", t, j, (long)slot_row[t * KK + j],
                (long)r);
          CHECK(src_token[r] == t, "src_token[%ld] = %ld, want %d", (long)r, (long)src_token[r], t);
          for (int h = 0; h < H; h++) CHECK(x_perm[r * H + h] == x[t * H + h], "x_perm[%ld,%d]", (long)r, h);
          r++;
        }
    CHECK(group_end[e] == r, "group_end[%d] = %ld, want %ld", e, (long)group_end[e], (long)r);
  }
  CHECK(slot_row[1 * KK + 1] == -1, "dropped slot has slot_row %ld", (long)slot_row[3]);
  memcpy(out_slot_row, slot_row, sizeof slot_row);
  /* ids only (x and x_perm NULL), and an id out of range. */
  OK(moehal_moe_permute(be, &ti.t, E, NULL, &tg.t, &ts.t, &tr.t, NULL));
  ids[0] = E;
  EXPECT_ERR(moehal_moe_permute(be, &ti.t, E, NULL, &tg.t, &ts.t, &tr.t, NULL), MOEHAL_INVALID_ARGUMENT, "ids");
  ids[0] = 0;

  /* int64 ids (torch.topk returns int64): the same permutation as int32 ids. */
  int64_t ids64[T * KK];
  for (int i = 0; i < T * KK; i++) ids64[i] = ids[i];
  int64_t group_end64[E], src_token64[T * KK], slot_row64[T * KK];
  float x_perm64[T * KK * H];
  Tensor ti64, tg64, ts64, tr64, tp64;
  tset(&ti64, ids64, I64, 2, T, KK, 0);
  tset(&tg64, group_end64, I64, 1, E, 0, 0);
  tset(&ts64, src_token64, I64, 1, T * KK, 0, 0);
  tset(&tr64, slot_row64, I64, 2, T, KK, 0);
  tset(&tp64, x_perm64, F32, 2, T * KK, H, 0);
  OK(moehal_moe_permute(be, &ti.t, E, &tx.t, &tg.t, &ts.t, &tr.t, &tp.t));
  OK(moehal_moe_permute(be, &ti64.t, E, &tx.t, &tg64.t, &ts64.t, &tr64.t, &tp64.t));
  CHECK(memcmp(group_end64, group_end, sizeof group_end) == 0, "int64 ids: group_end differs from int32 ids");
  CHECK(memcmp(slot_row64, slot_row, sizeof slot_row) == 0, "int64 ids: slot_row differs from int32 ids");
  CHECK(memcmp(src_token64, src_token, group_end[E - 1] * sizeof(int64_t)) == 0,
        "int64 ids: src_token differs from int32 ids");
  CHECK(memcmp(x_perm64, x_perm, group_end[E - 1] * H * sizeof(float)) == 0,
        "int64 ids: x_perm differs from int32 ids");
  /* An id of 2^32 is an error, never expert 0 (its low 32 bits); nothing is written. */
  for (int i = 0; i < E; i++) group_end64[i] = -7;
  ids64[3] = (int64_t)1 << 32;
  EXPECT_ERR(moehal_moe_permute(be, &ti64.t, E, NULL, &tg64.t, &ts64.t, &tr64.t, NULL), MOEHAL_INVALID_ARGUMENT,
             "ids[3] = 4294967296");
  ids64[3] = -2;
  EXPECT_ERR(moehal_moe_permute(be, &ti64.t, E, NULL, &tg64.t, &ts64.t, &tr64.t, NULL), MOEHAL_INVALID_ARGUMENT,
             "ids[3] = -2");
  ids64[3] = (int64_t)-1 - ((int64_t)1 << 32); /* low 32 bits: -1, a dropped slot */
  EXPECT_ERR(moehal_moe_permute(be, &ti64.t, E, NULL, &tg64.t, &ts64.t, &tr64.t, NULL), MOEHAL_INVALID_ARGUMENT,
             "ids[3]");
  for (int i = 0; i < E; i++) CHECK(group_end64[i] == -7, "a rejected call wrote group_end[%d]", i);
  /* Other id dtypes are named. */
  Tensor tbad;
  tset(&tbad, x, F32, 2, T, KK, 0);
  EXPECT_ERR(moehal_moe_permute(be, &tbad.t, E, NULL, &tg64.t, &ts64.t, &tr64.t, NULL), MOEHAL_INVALID_ARGUMENT,
             "int32 or int64");
}

static void test_swiglu(const moehal_backend* be) {
  enum { M = 3, I = 4 };
  float h[M * 2 * I];
  for (int i = 0; i < M * 2 * I; i++) h[i] = frand(-15, 15);
  /* Output in memory allocated by moehal, described by a DLTensor. */
  moehal_buffer* buf = NULL;
  OK(moehal_alloc(be, M * I * sizeof(float), &buf));
  void* data = NULL;
  size_t bytes = 0;
  OK(moehal_buffer_data(buf, &data, &bytes));
  CHECK(data != NULL && bytes == M * I * sizeof(float), "buffer_data: %p %zu", data, bytes);
  moehal_device_info info;
  OK(moehal_backend_device_info(be, &info));
  for (int with_limit = 0; with_limit < 2; with_limit++) {
    float limit = 10.0f, out[M * I];
    Tensor th, to;
    tset(&th, h, F32, 2, M, 2 * I, 0);
    tset(&to, data, F32, 2, M, I, 0);
    to.t.device = info.device;
    OK(moehal_swiglu(be, &th.t, with_limit ? &limit : NULL, &to.t));
    OK(moehal_synchronize(be));
    OK(moehal_download(be, buf, 0, out, sizeof out));
    for (int m = 0; m < M; m++)
      for (int i = 0; i < I; i++) {
        double g = h[m * 2 * I + i], u = h[m * 2 * I + I + i];
        if (with_limit) {
          g = g > limit ? limit : g;
          u = u > limit ? limit : (u < -limit ? -limit : u);
        }
        double want = g / (1.0 + exp(-g)) * u;
        CHECK(close_to(out[m * I + i], want, 1e-5), "swiglu(limit=%d)[%d,%d] = %g, want %g", with_limit, m, i,
              out[m * I + i], want);
      }
  }
  float bad_limit = -1.0f, out[M * I];
  Tensor th, to;
  tset(&th, h, F32, 2, M, 2 * I, 0);
  tset(&to, out, F32, 2, M, I, 0);
  EXPECT_ERR(moehal_swiglu(be, &th.t, &bad_limit, &to.t), MOEHAL_INVALID_ARGUMENT, "limit");
  /* The output overlapping the input is rejected. */
  Tensor alias;
  tset(&alias, h, F32, 2, M, I, 0);
  EXPECT_ERR(moehal_swiglu(be, &th.t, NULL, &alias.t), MOEHAL_INVALID_ARGUMENT, "overlaps");
  moehal_buffer_free(buf);
}

static void test_combine(const moehal_backend* be, const int64_t* slot_row) {
  enum { T = 4, KK = 2, H = 3, R = T * KK };
  float y_perm[R * H], weights[T * KK], out[T * H];
  for (int i = 0; i < R * H; i++) y_perm[i] = frand(-1, 1);
  for (int i = 0; i < T * KK; i++) weights[i] = frand(0, 1);
  Tensor ty, ts, tw, to;
  tset(&ty, y_perm, F32, 2, R, H, 0);
  tset(&ts, (void*)slot_row, I64, 2, T, KK, 0);
  tset(&tw, weights, F32, 2, T, KK, 0);
  tset(&to, out, F32, 2, T, H, 0);
  OK(moehal_moe_combine(be, &ty.t, &ts.t, &tw.t, &to.t));
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      float acc = 0;
      for (int j = 0; j < KK; j++) {
        int64_t r = slot_row[t * KK + j];
        if (r >= 0) acc += weights[t * KK + j] * y_perm[r * H + h];
      }
      CHECK(close_to(out[t * H + h], acc, 1e-5), "moe_combine[%d,%d] = %g, want %g", t, h, out[t * H + h], acc);
    }
}

/* ------------------------------------------------------------------------------------------- */

static const uint64_t TOY_M[3] = {151872553228292665ull, 9591860036772465ull, 71266316989379275ull};
static const uint64_t TOY_P[4] = {11, 13, 17, 19};
static const uint64_t TOY_OFF[4] = {0, 11, 24, 41};

/* C restatement of OPS.md §4 for the toy layer (N = 3, K = 2, pad 2). */
static void hash_ref(const int64_t* ids, const int64_t* pos, const uint8_t* alive, const int64_t* hist, int nh,
                     int T, int64_t* rows) {
  const int N = 3, K = 2;
  const uint64_t pad = 2;
  for (int t = 0; t < T; t++) {
    uint64_t w[3];
    if (alive && !alive[t]) {
      for (int k = 0; k < N; k++) w[k] = pad;
    } else {
      w[0] = (uint64_t)ids[t];
      int blocked = 0;
      for (int k = 1; k < N; k++) {
        if (!blocked) {
          if (k <= t) {
            int s = t - k;
            blocked = (pos && pos[s + 1] <= pos[s]) || (alive && !alive[s]);
          } else {
            /* before ids[0]: only the history, and only for the first segment */
            blocked = (k - t) > nh;
            if (!blocked && pos) {
              for (int s = 1; s <= t; s++)
                if (pos[s] <= pos[s - 1]) blocked = 1;
            }
          }
        }
        w[k] = blocked ? pad : (k <= t ? (uint64_t)ids[t - k] : (uint64_t)hist[nh - (k - t)]);
      }
    }
    for (int n = 2; n <= N; n++) {
      uint64_t hv = 0;
      for (int k = 0; k < n; k++) hv ^= w[k] * TOY_M[k];
      for (int j = 0; j < K; j++) {
        int col = (n - 2) * K + j;
        rows[t * 4 + col] = (int64_t)(hv % TOY_P[col] + TOY_OFF[col]);
      }
    }
  }
}

static void test_engram(const moehal_backend* be) {
  moehal_engram_layer* layer = NULL;
  OK(moehal_engram_layer_create(3, 2, TOY_M, TOY_P, 50, 2, &layer));
  int64_t n = 0, k = 0, c = 0;
  uint64_t r = 0, primes[4], offs[4], derived[4];
  OK(moehal_engram_layer_info(layer, &n, &k, &c, &r));
  CHECK(n == 3 && k == 2 && c == 4 && r == 60, "toy layer info %ld %ld %ld %lu", (long)n, (long)k, (long)c,
        (unsigned long)r);
  OK(moehal_engram_layer_primes(layer, primes, offs, 4));
  OK(moehal_engram_derive_primes(11, 3, 2, 1, derived, 4));
  for (int i = 0; i < 4; i++) {
    CHECK(primes[i] == TOY_P[i] && offs[i] == TOY_OFF[i] && derived[i] == TOY_P[i], "toy primes/offsets [%d]", i);
  }

  /* OPS.md toy check (hand-computed upstream). */
  int64_t ids[5] = {7, 3, 7, 3, 49};
  const int64_t want[5][4] = {{9, 21, 28, 42}, {8, 11, 39, 59}, {0, 18, 25, 50}, {8, 11, 24, 46}, {5, 22, 37, 46}};
  int64_t rows[5 * 4];
  Tensor ti, tr;
  tset(&ti, ids, I64, 1, 5, 0, 0);
  tset(&tr, rows, I64, 2, 5, 4, 0);
  OK(moehal_engram_hash(be, layer, &ti.t, NULL, NULL, NULL, 0, &tr.t));
  for (int t = 0; t < 5; t++)
    for (int j = 0; j < 4; j++)
      CHECK(rows[t * 4 + j] == want[t][j], "engram toy rows[%d,%d] = %ld, want %ld", t, j, (long)rows[t * 4 + j],
            (long)want[t][j]);
  int64_t ref[5 * 4];
  hash_ref(ids, NULL, NULL, NULL, 0, 5, ref);
  CHECK(memcmp(ref, rows, sizeof rows) == 0, "C hash_ref disagrees with the toy check");

  /* Positions (two segments), alive mask and history. */
  enum { T = 7 };
  int64_t ids2[T], pos[T] = {0, 1, 2, 3, 0, 1, 2}, hist[2] = {41, 17}, rows2[T * 4], want2[T * 4];
  uint8_t alive[T] = {1, 1, 0, 1, 1, 1, 1};
  for (int t = 0; t < T; t++) ids2[t] = (int64_t)(urand() * 50);
  Tensor ti2, tp, ta, tr2;
  tset(&ti2, ids2, I64, 1, T, 0, 0);
  tset(&tp, pos, I64, 1, T, 0, 0);
  tset(&ta, alive, U8, 1, T, 0, 0);
  tset(&tr2, rows2, I64, 2, T, 4, 0);
  for (int variant = 0; variant < 4; variant++) {
    const int64_t* P = (variant & 1) ? pos : NULL;
    const uint8_t* A = (variant & 2) ? alive : NULL;
    OK(moehal_engram_hash(be, layer, &ti2.t, P ? &tp.t : NULL, A ? &ta.t : NULL, hist, 2, &tr2.t));
    hash_ref(ids2, P, A, hist, 2, T, want2);
    for (int i = 0; i < T * 4; i++)
      CHECK(rows2[i] == want2[i], "engram variant %d rows[%d] = %ld, want %ld", variant, i, (long)rows2[i],
            (long)want2[i]);
  }
  /* kDLBool alive mask is taken as u8. */
  ta.t.dtype.code = kDLBool;
  OK(moehal_engram_hash(be, layer, &ti2.t, &tp.t, &ta.t, hist, 2, &tr2.t));
  ids2[3] = 50;
  EXPECT_ERR(moehal_engram_hash(be, layer, &ti2.t, NULL, NULL, NULL, 0, &tr2.t), MOEHAL_INVALID_ARGUMENT, "ids");
  int64_t long_hist[3] = {1, 2, 3};
  ids2[3] = 0;
  EXPECT_ERR(moehal_engram_hash(be, layer, &ti2.t, NULL, NULL, long_hist, 3, &tr2.t), MOEHAL_INVALID_ARGUMENT,
             "history");

  /* engram_lookup on an f32 table [R = 60, D = 2]. */
  float table[60 * 2], out[5 * 8];
  for (int i = 0; i < 120; i++) table[i] = frand(-1, 1);
  Tensor tt, to;
  tset(&tt, table, F32, 2, 60, 2, 0);
  tset(&to, out, F32, 2, 5, 8, 0);
  OK(moehal_engram_lookup(be, layer, &ti.t, NULL, NULL, NULL, 0, &tt.t, MOEHAL_TABLE_F32, &to.t));
  for (int t = 0; t < 5; t++)
    for (int col = 0; col < 4; col++)
      for (int d = 0; d < 2; d++)
        CHECK(out[t * 8 + col * 2 + d] == table[want[t][col] * 2 + d], "engram_lookup[%d,%d,%d]", t, col, d);
  moehal_engram_layer_destroy(layer);

  /* The DeepSeek-V4.1-Flash layers (table sizes from OPS.md). */
  for (int i = 0; i < 2; i++) {
    moehal_engram_layer* v41 = NULL;
    OK(moehal_engram_layer_v41_flash(i, &v41));
    OK(moehal_engram_layer_info(v41, &n, &k, &c, &r));
    CHECK(n == 4 && k == 8 && c == 24 && r == (i == 0 ? 384006168ull : 384016682ull), "v41 layer %d: %lu rows", i,
          (unsigned long)r);
    moehal_engram_layer_destroy(v41);
  }
  moehal_engram_layer* none = NULL;
  EXPECT_ERR(moehal_engram_layer_v41_flash(2, &none), MOEHAL_INVALID_ARGUMENT, "index");
  CHECK(none == NULL, "failed constructor left a handle");
  uint64_t even_m[3] = {2, 3, 5};
  EXPECT_ERR(moehal_engram_layer_create(3, 2, even_m, TOY_P, 50, 2, &none), MOEHAL_INVALID_ARGUMENT, "multipliers");
  /* Issue 16 item 5: beyond moehal's own limit (2^20 columns / primes; OPS.md sets none) is a
   * missing capability, MOEHAL_UNSUPPORTED; a rule of OPS.md broken stays MOEHAL_INVALID_ARGUMENT. */
  EXPECT_ERR(moehal_engram_layer_create(2, (int64_t)1 << 21, TOY_M, TOY_P, 50, 2, &none), MOEHAL_UNSUPPORTED,
             "heads");
  CHECK(none == NULL, "failed constructor left a handle");
  EXPECT_ERR(moehal_engram_derive_primes(11, 3, (int64_t)1 << 20, 2, derived, 4), MOEHAL_UNSUPPORTED, "layers");
  EXPECT_ERR(moehal_engram_derive_primes(11, 1, 2, 1, derived, 4), MOEHAL_INVALID_ARGUMENT, "max_order");
}

/* ------------------------------------------------------------------------------------------- */

static float e4m3(uint8_t b) {
  int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  if (e == 15 && m == 7) return NAN;
  float v = e == 0 ? ldexpf((float)m / 8.0f, -6) : ldexpf(1.0f + (float)m / 8.0f, e - 7);
  return s ? -v : v;
}

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* ------------------------------------------------------------------------------------------- */

/* OPS.md §6: quantized grouped_gemm (mxfp4 weight-only, int8 W8A8) and the quantize ops. */
static float e2m1(uint8_t c) {
  static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  return (c & 8) ? -mag[c & 7] : mag[c & 7];
}

static void test_quant(const moehal_backend* be) {
  /* mxfp4 weight-only, f32 activations: W[n,k] = e2m1(nibble) * 2^(scale - 127). */
  {
    enum { M = 3, K = 64, N = 2, G = 1 };
    float x[M * K], y[M * N];
    uint8_t w[G * N * K / 2], ws[G * N * K / 32];
    int64_t group_end[G] = {2}; /* row 2 is past the last group: untouched */
    for (int i = 0; i < M * K; i++) x[i] = frand(-1, 1);
    for (int i = 0; i < G * N * K / 2; i++) w[i] = (uint8_t)(urand() * 256);
    for (int i = 0; i < G * N * K / 32; i++) ws[i] = (uint8_t)(125 + (int)(urand() * 4));
    for (int i = 0; i < M * N; i++) y[i] = nanf_poison();
    Tensor tx, tw, tws, tg, ty;
    tset(&tx, x, F32, 2, M, K, 0);
    tset(&tw, w, U8, 3, G, N, K / 2);
    tset(&tws, ws, U8, 3, G, N, K / 32);
    tset(&tg, group_end, I64, 1, G, 0, 0);
    tset(&ty, y, F32, 2, M, N, 0);
    OK(moehal_grouped_gemm_quant(be, &tx.t, NULL, MOEHAL_WEIGHT_MXFP4, &tw.t, &tws.t, &tg.t, NULL, NULL, &ty.t));
    for (int r = 0; r < 2; r++)
      for (int n = 0; n < N; n++) {
        double acc = 0;
        for (int k = 0; k < K; k++) {
          uint8_t b = w[(n * K + k) / 2];
          uint8_t code = (k & 1) ? (b >> 4) : (b & 15);
          float wv = e2m1(code) * ldexpf(1.0f, ws[n * (K / 32) + k / 32] - 127);
          acc += (double)x[r * K + k] * wv;
        }
        CHECK(close_to(y[r * N + n], acc, 1e-5), "mxfp4 y[%d,%d] = %g, want %g", r, n, y[r * N + n], acc);
      }
    for (int n = 0; n < N; n++) CHECK(isnan(y[2 * N + n]), "mxfp4 wrote guard row 2");
    /* Unknown weight format; int8 activations with mxfp4 weights (an unpaired format). */
    EXPECT_ERR(moehal_grouped_gemm_quant(be, &tx.t, NULL, 9, &tw.t, &tws.t, &tg.t, NULL, NULL, &ty.t),
               MOEHAL_INVALID_ARGUMENT, "w_format");
    int8_t xi[M * K] = {0};
    float xs[M] = {1, 1, 1};
    Tensor txi, txs;
    tset(&txi, xi, I8, 2, M, K, 0);
    tset(&txs, xs, F32, 1, M, 0, 0);
    EXPECT_ERR(moehal_grouped_gemm_quant(be, &txi.t, &txs.t, MOEHAL_WEIGHT_MXFP4, &tw.t, &tws.t, &tg.t, NULL, NULL,
                                         &ty.t),
               MOEHAL_UNSUPPORTED, "pairs");
  }
  /* int8 W8A8: y = x_scale[m] * w_scale[n] * sum_k x*w (exact integer sum). */
  {
    enum { M = 2, K = 5, N = 3, G = 1 };
    int8_t x[M * K], w[G * N * K];
    float xs[M] = {0.5f, 0.25f}, ws[G * N] = {1.0f, 2.0f, 0.125f}, y[M * N];
    int64_t group_end[G] = {M};
    for (int i = 0; i < M * K; i++) x[i] = (int8_t)((int)(urand() * 255) - 127);
    for (int i = 0; i < G * N * K; i++) w[i] = (int8_t)((int)(urand() * 255) - 127);
    Tensor tx, txs, tw, tws, tg, ty;
    tset(&tx, x, I8, 2, M, K, 0);
    tset(&txs, xs, F32, 1, M, 0, 0);
    tset(&tw, w, I8, 3, G, N, K);
    tset(&tws, ws, F32, 2, G, N, 0);
    tset(&tg, group_end, I64, 1, G, 0, 0);
    tset(&ty, y, F32, 2, M, N, 0);
    OK(moehal_grouped_gemm_quant(be, &tx.t, &txs.t, MOEHAL_WEIGHT_INT8, &tw.t, &tws.t, &tg.t, NULL, NULL, &ty.t));
    for (int r = 0; r < M; r++)
      for (int n = 0; n < N; n++) {
        long sum = 0;
        for (int k = 0; k < K; k++) sum += (long)x[r * K + k] * w[n * K + k];
        double want = (double)xs[r] * ws[n] * (double)sum;
        CHECK(close_to(y[r * N + n], want, 1e-6), "int8 y[%d,%d] = %g, want %g", r, n, y[r * N + n], want);
      }
  }
  /* quantize_int8: ties to even, an all-zero row gets scale 1. */
  {
    float x[8] = {127.0f, 2.5f, -3.5f, 0.5f, 0, 0, 0, 0}, s[2];
    int8_t q[8];
    Tensor tx, tq, ts;
    tset(&tx, x, F32, 2, 2, 4, 0);
    tset(&tq, q, I8, 2, 2, 4, 0);
    tset(&ts, s, F32, 1, 2, 0, 0);
    OK(moehal_quantize_int8(be, &tx.t, &tq.t, &ts.t));
    const int8_t want[8] = {127, 2, -4, 0, 0, 0, 0, 0};
    CHECK(memcmp(q, want, 8) == 0, "quantize_int8 codes %d %d %d %d", q[0], q[1], q[2], q[3]);
    CHECK(s[0] == 1.0f && s[1] == 1.0f, "quantize_int8 scales %g %g", s[0], s[1]);
  }
  /* quantize_fp8 with E8M0 scales: 500 -> scale 2 (byte 128), 250 -> 256 (0x78); a group of ones
   * -> scale 2^-8 (byte 119), 1 / 2^-8 = 256 (0x78). */
  {
    enum { K = 130 };
    float x[K];
    uint8_t q[K], s[2];
    for (int i = 0; i < K; i++) x[i] = 1.0f;
    x[0] = 500.0f;
    Tensor tx, tq, ts;
    tset(&tx, x, F32, 2, 1, K, 0);
    tset(&tq, q, U8, 2, 1, K, 0);
    tset(&ts, s, U8, 2, 1, 2, 0);
    OK(moehal_quantize_fp8(be, &tx.t, &tq.t, &ts.t));
    CHECK(s[0] == 128 && s[1] == 119, "quantize_fp8 scale bytes %d %d", s[0], s[1]);
    CHECK(q[0] == 0x78 && q[1] == 0x30 && q[128] == 0x78, "quantize_fp8 codes %#x %#x %#x", q[0], q[1], q[128]);
    CHECK(e4m3(q[1]) == 0.5f, "e4m3(%#x) = %g", q[1], e4m3(q[1]));
  }
}


static void test_gather_rows(const moehal_backend* be) {
  enum { R = 7, D = 4, T = 2, C = 3 };
  int64_t rows[T * C] = {0, 6, 3, 3, 3, 1};
  Tensor tr;
  tset(&tr, rows, I64, 2, T, C, 0);
  /* f32, bf16, f16: a copy, bit for bit. */
  float tf[R * D], of[T * C * D];
  uint16_t th[R * D], oh[T * C * D];
  for (int i = 0; i < R * D; i++) {
    tf[i] = frand(-5, 5);
    th[i] = (uint16_t)(urand() * 65536);
  }
  Tensor tt, to;
  tset(&tt, tf, F32, 2, R, D, 0);
  tset(&to, of, F32, 2, T, C * D, 0);
  OK(moehal_gather_rows(be, &tt.t, MOEHAL_TABLE_F32, &tr.t, &to.t));
  for (int t = 0; t < T; t++)
    for (int c = 0; c < C; c++)
      for (int d = 0; d < D; d++)
        CHECK(f32_bits(of[(t * C + c) * D + d]) == f32_bits(tf[rows[t * C + c] * D + d]), "gather f32");
  for (int f = 0; f < 2; f++) {
    DLDataType dt = f == 0 ? BF16 : F16;
    for (int i = 0; i < R * D; i++) /* keep them finite and non-NaN: exponent bits below all-ones */
      th[i] = (uint16_t)(th[i] & (f == 0 ? 0xBFFF : 0xBBFF));
    tset(&tt, th, dt, 2, R, D, 0);
    tset(&to, oh, dt, 2, T, C * D, 0);
    OK(moehal_gather_rows(be, &tt.t, f == 0 ? MOEHAL_TABLE_BF16 : MOEHAL_TABLE_F16, &tr.t, &to.t));
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++)
        for (int d = 0; d < D; d++)
          CHECK(oh[(t * C + c) * D + d] == th[rows[t * C + c] * D + d], "gather %s", f == 0 ? "bf16" : "f16");
  }
  /* fp8_e4m3_ue8m0: D8 = 32, rows of 33 bytes; out f32 and bf16. */
  enum { D8 = 32, W8 = 33 };
  uint8_t t8[R * W8];
  for (int rr = 0; rr < R; rr++) {
    for (int d = 0; d < D8; d++) t8[rr * W8 + d] = (uint8_t)(urand() * 256);
    t8[rr * W8 + D8] = (uint8_t)(120 + rr * 2); /* scale 2^(b - 127) */
  }
  t8[0] = 0x7f; /* NaN (S.1111.111) */
  float o8[T * C * D8];
  uint16_t o8b[T * C * D8];
  tset(&tt, t8, U8, 2, R, W8, 0);
  tset(&to, o8, F32, 2, T, C * D8, 0);
  OK(moehal_gather_rows(be, &tt.t, MOEHAL_TABLE_FP8_E4M3_UE8M0, &tr.t, &to.t));
  Tensor tob;
  tset(&tob, o8b, BF16, 2, T, C * D8, 0);
  OK(moehal_gather_rows(be, &tt.t, MOEHAL_TABLE_FP8_E4M3_UE8M0, &tr.t, &tob.t));
  for (int t = 0; t < T; t++)
    for (int c = 0; c < C; c++) {
      int64_t rr = rows[t * C + c];
      for (int d = 0; d < D8; d++) {
        float want = e4m3(t8[rr * W8 + d]) * ldexpf(1.0f, (int)t8[rr * W8 + D8] - 127);
        float got = o8[(t * C + c) * D8 + d];
        uint16_t gotb = o8b[(t * C + c) * D8 + d];
        if (isnan(want)) {
          CHECK(f32_bits(got) == 0x7fc00000u, "fp8 NaN -> %08x, want canonical 7fc00000", f32_bits(got));
          CHECK((gotb & 0x7f80) == 0x7f80 && (gotb & 0x7f) != 0, "fp8 NaN -> bf16 %04x", gotb);
        } else {
          CHECK(f32_bits(got) == f32_bits(want), "fp8 -> f32 [%d,%d,%d] = %g, want %g", t, c, d, got, want);
          /* e4m3 values times a power of two are exact in bf16 */
          CHECK(gotb == (uint16_t)(f32_bits(want) >> 16), "fp8 -> bf16 [%d,%d,%d] = %04x, want %04x", t, c, d, gotb,
                f32_bits(want) >> 16);
        }
      }
    }
  rows[2] = R;
  tset(&tt, tf, F32, 2, R, D, 0);
  tset(&to, of, F32, 2, T, C * D, 0);
  EXPECT_ERR(moehal_gather_rows(be, &tt.t, MOEHAL_TABLE_F32, &tr.t, &to.t), MOEHAL_INVALID_ARGUMENT, "rows");
  rows[2] = 0;
  EXPECT_ERR(moehal_gather_rows(be, &tt.t, 9, &tr.t, &to.t), MOEHAL_INVALID_ARGUMENT, "format");
}

/* ------------------------------------------------------------------------------------------- */

static void test_memory(const moehal_backend* be) {
  float src[16], dst[16];
  for (int i = 0; i < 16; i++) src[i] = (float)i * 0.5f;
  moehal_buffer* b = NULL;
  OK(moehal_alloc(be, sizeof src, &b));
  OK(moehal_upload(be, b, 0, src, sizeof src));
  OK(moehal_upload(be, b, 4 * sizeof(float), src, 2 * sizeof(float))); /* at an offset */
  OK(moehal_synchronize(be));
  OK(moehal_download(be, b, 0, dst, sizeof dst));
  for (int i = 0; i < 16; i++) {
    float want = (i == 4 || i == 5) ? src[i - 4] : src[i];
    CHECK(dst[i] == want, "download[%d] = %g, want %g", i, dst[i], want);
  }
  float part[2];
  OK(moehal_download(be, b, 14 * sizeof(float), part, sizeof part));
  CHECK(part[0] == src[14] && part[1] == src[15], "download at offset");
  EXPECT_ERR(moehal_upload(be, b, 15 * sizeof(float), src, 2 * sizeof(float)), MOEHAL_INVALID_ARGUMENT, "upload");
  EXPECT_ERR(moehal_download(be, b, 0, NULL, 4), MOEHAL_INVALID_ARGUMENT, "dst");
  moehal_buffer_free(b);
  moehal_buffer_free(NULL);

  /* Wrapping caller memory: uploads land in the caller's array, no copy. */
  float mine[4] = {0, 0, 0, 0};
  moehal_buffer* w = NULL;
  OK(moehal_wrap_external(be, mine, sizeof mine, &w));
  void* data = NULL;
  OK(moehal_buffer_data(w, &data, NULL));
  CHECK(data == (void*)mine, "wrapped buffer address %p, want %p", data, (void*)mine);
  OK(moehal_upload(be, w, 0, src + 2, sizeof mine));
  CHECK(mine[0] == src[2] && mine[3] == src[5], "upload into wrapped memory did not reach it");
  moehal_buffer_free(w);
  CHECK(mine[3] == src[5], "freeing a wrapped buffer touched the memory");
  EXPECT_ERR(moehal_wrap_external(be, NULL, 16, &w), MOEHAL_INVALID_ARGUMENT, "ptr");

  /* Host backends have no streams. */
  int dummy_stream = 0;
  EXPECT_ERR(moehal_set_stream(be, &dummy_stream), MOEHAL_UNSUPPORTED, "stream");
}

static void test_descriptor_errors(const moehal_backend* be) {
  enum { M = 2, I = 2 };
  float h[M * 2 * I] = {1, 2, 3, 4, 5, 6, 7, 8}, out[M * I];
  Tensor th, to;
  tset(&th, h, F32, 2, M, 2 * I, 0);
  tset(&to, out, F32, 2, M, I, 0);
  OK(moehal_swiglu(be, &th.t, NULL, &to.t));
  EXPECT_ERR(moehal_swiglu(NULL, &th.t, NULL, &to.t), MOEHAL_INVALID_ARGUMENT, "backend");
  EXPECT_ERR(moehal_swiglu(be, NULL, NULL, &to.t), MOEHAL_INVALID_ARGUMENT, "`h`");
  EXPECT_ERR(moehal_swiglu(be, &th.t, NULL, NULL), MOEHAL_INVALID_ARGUMENT, "`out`");
  /* a device tensor on a host backend */
  th.t.device.device_type = kDLCUDA;
  EXPECT_ERR(moehal_swiglu(be, &th.t, NULL, &to.t), MOEHAL_INVALID_ARGUMENT, "device");
  th.t.device.device_type = kDLCPU;
  /* non-contiguous strides (a transposed view) */
  int64_t strides[2] = {1, M};
  th.t.strides = strides;
  EXPECT_ERR(moehal_swiglu(be, &th.t, NULL, &to.t), MOEHAL_INVALID_ARGUMENT, "contiguous");
  /* explicit row-major strides are fine */
  strides[0] = 2 * I;
  strides[1] = 1;
  OK(moehal_swiglu(be, &th.t, NULL, &to.t));
  th.t.strides = NULL;
  /* misaligned byte_offset, and a valid one (row 1 as a [1, 2I] tensor) */
  th.t.byte_offset = 2;
  EXPECT_ERR(moehal_swiglu(be, &th.t, NULL, &to.t), MOEHAL_INVALID_ARGUMENT, "aligned");
  th.t.byte_offset = 2 * I * sizeof(float);
  th.shape[0] = 1;
  to.shape[0] = 1;
  OK(moehal_swiglu(be, &th.t, NULL, &to.t));
  double g = h[4], u = h[6];
  CHECK(close_to(out[0], g / (1 + exp(-g)) * u, 1e-5), "byte_offset view read the wrong row: %g", out[0]);
  th.t.byte_offset = 0;
  th.shape[0] = M;
  to.shape[0] = M;
  /* vector lanes, unknown dtype code, rank 5, negative extent, NULL data */
  th.t.dtype.lanes = 4;
  EXPECT_ERR(moehal_swiglu(be, &th.t, NULL, &to.t), MOEHAL_INVALID_ARGUMENT, "lanes");
  th.t.dtype = (DLDataType){kDLComplex, 64, 1};
  EXPECT_ERR(moehal_swiglu(be, &th.t, NULL, &to.t), MOEHAL_INVALID_ARGUMENT, "dtype");
  th.t.dtype = F32;
  th.t.ndim = 5;
  EXPECT_ERR(moehal_swiglu(be, &th.t, NULL, &to.t), MOEHAL_INVALID_ARGUMENT, "ndim");
  th.t.ndim = 2;
  th.shape[0] = -1;
  EXPECT_ERR(moehal_swiglu(be, &th.t, NULL, &to.t), MOEHAL_INVALID_ARGUMENT, "negative");
  th.shape[0] = M;
  th.t.data = NULL;
  EXPECT_ERR(moehal_swiglu(be, &th.t, NULL, &to.t), MOEHAL_INVALID_ARGUMENT, "NULL");
  /* an empty tensor may have NULL data */
  th.shape[0] = 0;
  to.shape[0] = 0;
  OK(moehal_swiglu(be, &th.t, NULL, &to.t));
  /* two outputs that overlap each other */
  int32_t ids[4] = {0, 1, 1, 0};
  int64_t big[16];
  Tensor ti, tg, ts, tr;
  tset(&ti, ids, I32, 2, 2, 2, 0);
  tset(&tg, big, I64, 1, 2, 0, 0);
  tset(&ts, big + 1, I64, 1, 4, 0, 0);
  tset(&tr, big + 8, I64, 2, 2, 2, 0);
  EXPECT_ERR(moehal_moe_permute(be, &ti.t, 2, NULL, &tg.t, &ts.t, &tr.t, NULL), MOEHAL_INVALID_ARGUMENT,
             "overlaps");
  tset(&ts, big + 2, I64, 1, 4, 0, 0);
  OK(moehal_moe_permute(be, &ti.t, 2, NULL, &tg.t, &ts.t, &tr.t, NULL));
}

/* ------------------------------------------------------------------------------------------- */

int main(void) {
  CHECK(moehal_abi_version() == MOEHAL_ABI_VERSION, "ABI version %u, header %d", moehal_abi_version(),
        MOEHAL_ABI_VERSION);
  CHECK(moehal_version() != NULL && moehal_version()[0] != '\0', "empty version");
  CHECK(strcmp(moehal_status_name(MOEHAL_PANIC), "MOEHAL_PANIC") == 0, "status name");
  printf("moehal %s (ABI %u)\n", moehal_version(), moehal_abi_version());

  size_t count = 0;
  OK(moehal_backend_count(&count));
  CHECK(count >= 1, "no backend compiled in");
  int have_cpu = 0;
  for (size_t i = 0; i < count; i++) {
    const char *name = NULL, *reason = NULL;
    int32_t avail = 0;
    OK(moehal_backend_entry(i, &name, &avail, &reason));
    printf("  backend %-10s %s%s%s\n", name, avail ? "available" : "unavailable", avail ? "" : ": ", reason);
    if (avail && strcmp(name, "cpu") == 0) have_cpu = 1;
  }
  EXPECT_ERR(moehal_backend_entry(count, NULL, NULL, NULL), MOEHAL_INVALID_ARGUMENT, "index");
  moehal_backend* none = NULL;
  EXPECT_ERR(moehal_backend_open("no-such-backend", &none), MOEHAL_UNAVAILABLE, "no-such-backend");
  CHECK(none == NULL, "failed open left a handle");
  EXPECT_ERR(moehal_backend_open("cpu", NULL), MOEHAL_INVALID_ARGUMENT, "out");

  const char* want = have_cpu ? "cpu" : "reference";
  moehal_backend* be = NULL;
  OK(moehal_backend_open(want, &be));
  if (!be) {
    fprintf(stderr, "cannot open %s: %s\n", want, moehal_last_error());
    return 1;
  }
  printf("testing on backend \"%s\"%s\n", moehal_backend_name(be),
         have_cpu ? "" : " (\"cpu\" is not available in this build: using the reference backend)");
  moehal_device_info info;
  OK(moehal_backend_device_info(be, &info));
  printf("  device: %s [%s], compute units %ld\n", info.name, info.capability, (long)info.compute_units);
  CHECK(info.device.device_type == kDLCPU, "host backend reports DLPack device type %d", (int)info.device.device_type);

  test_memory(be);
  test_grouped_gemm(be);
  test_router_topk(be);
  test_router_hash(be);
  int64_t slot_row[8];
  test_permute_swiglu_combine(be, slot_row);
  test_swiglu(be);
  test_combine(be, slot_row);
  test_engram(be);
  test_gather_rows(be);
  test_quant(be);
  test_descriptor_errors(be);
  moehal_backend_close(be);
  moehal_backend_close(NULL);

  if (failures) {
    fprintf(stderr, "%d of %d checks FAILED\n", failures, checks);
    return 1;
  }
  printf("all %d checks passed on backend \"%s\"\n", checks, want);
  return 0;
}
