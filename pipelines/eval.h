#pragma once
// Batch evaluation of hallucination benchmarks (POPE, CHAIR) over several variants of one loaded
// LLaVA model: `mmattn eval SPEC.json` (or `mmattn run` with "pipeline": "eval").
//
// Spec block "eval" (strict; defaults in docs/specs.md):
//   "output_dir": "out/eval",          per-sample results, summary.json, summary.md, report.html
//   "batch_size": 16,                  requests decoded together (continuous batching)
//   "limit": 0,                        > 0: only the first N samples of each benchmark
//   "benchmarks": {
//     "pope":  {"questions": ["coco_pope_random.json", {"split": "x", "file": "..."}],
//               "images": "dir", "max_new_tokens": 16,
//               "prompt_suffix": "Answer the question using a single word or phrase."},
//     "chair": {"image_ids": "ids.json" | [ids], "images": "dir", "gt": "coco_chair_gt.json",
//               "synonyms": "synonyms.txt" (optional), "prompt": "Please describe this image in detail.",
//               "max_new_tokens": 512, "image_pattern": "COCO_val2014_%012d.jpg"}
//   },
//   "variants": [{"name": "greedy"}, {"name": "fastv64", "pruning": {...}, "do_sample": ..., ...}]
//
// Nothing is lost: every finished sample is appended to
// <output_dir>/<variant>/<benchmark>[.shard-i-of-n].jsonl and flushed at once; a rerun reads
// those rows back and skips their samples (a torn last line from a killed run is dropped). A bad
// image or a malformed question line becomes an error row ("ok": false, with the line number /
// file) and the run goes on. Metrics are always computed from the rows, in sample order, so a
// resumed run, or shards merged with `mmattn eval-merge DIR`, give the numbers of one
// uninterrupted run. Shard i of n takes the samples whose index % n == i.
#include <cstdint>
#include <string>
#include <vector>

#include "core/json_reader.h"

namespace mmattn {

struct Spec;

struct EvalRunOptions {
  int shard = 0, num_shards = 1;  // --shard i/n
};

// Validates the "eval" block (ConfigError naming the JSON path).
void validate_eval_options(JsonReader& r);
// Runs every variant on every benchmark; returns the summary (also written to output_dir).
Json run_eval(const Spec& spec, const EvalRunOptions& opt);
Json run_eval_spec(const Spec& spec);  // the registry's entry: one process, no sharding
// Merges the shard files under output_dir (written by runs with --shard) into the unsharded files
// and rewrites the summary. Reads output_dir/spec.json (saved by every run).
Json merge_eval(const std::string& output_dir);

// "i/n" -> {i, n}; ConfigError unless 0 <= i < n.
EvalRunOptions parse_shard(const std::string& s);

}  // namespace mmattn
