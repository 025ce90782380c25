#pragma once
// Batch evaluation of hallucination benchmarks (POPE, CHAIR, MME's hallucination subset) over
// several variants of one loaded LLaVA model: `mmattn eval SPEC.json` (or `mmattn run` with
// "pipeline": "eval").
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
//               "max_new_tokens": 512, "image_pattern": "COCO_val2014_%012d.jpg"},
//     "mme":   {"root": "MME_Benchmark_release_version"             (a) the official release folder
//               | "questions": "mme.jsonl", "images": "dir",        (b) lmms-lab/MME as JSON lines
//               "subtasks": ["existence", "count", "position", "color"], "prompt_style": "mme" | "llava",
//               "prompt_suffix": "" ("llava": "Answer the question using a single word or phrase."),
//               "max_new_tokens": 16}
//   },
//   "variants": [{"name": "greedy"}, {"name": "fastv64", "pruning": {...}, "do_sample": ..., ...}]
//
// Nothing is lost: every finished sample is appended to
// <output_dir>/<variant>/<benchmark>[.shard-i-of-n].jsonl and flushed at once; a rerun reads
// those rows back and skips their samples (a torn last line from a killed run is dropped). Beside
// them <variant>/<benchmark>.config.json records what the rows depend on (model, dtype, seed, the
// benchmark's options, the variant as written and resolved); a run whose configuration differs
// stops with a ConfigError naming the field before writing anything (batch_size and limit may
// change), so rows of two configurations never mix. A bad
// image or a malformed question line becomes an error row ("ok": false, with the line number /
// file) and the run goes on. Metrics are always computed from the rows, in sample order, so a
// resumed run, or shards merged with `mmattn eval-merge DIR`, give the numbers of one
// uninterrupted run. Shard i of n takes the samples whose index % n == i.
//
// MME inputs (pipelines/mme.h has the details): (a) <root>/<subtask>/ holds the images and, for
// each, a same-named .txt of two lines "question<TAB>Yes|No", or <subtask>/images/ and
// <subtask>/questions_answers_YN/; (b) JSON lines {"question_id", "image" (relative to "images"),
// "question" (or "text"), "answer" (or "label"): "Yes"|"No", "category": subtask}. MME's questions
// already end in "Please answer yes or no.", so the default prompt is the question alone;
// "prompt_style": "llava" reproduces LLaVA-1.5's llava_mme.jsonl (that sentence replaced by
// "\nAnswer the question using a single word or phrase."). Scores as MME's calculation.py: per
// subtask acc (% questions right), acc+ (% images with both right), score = acc + acc+; total =
// sum of the subtask scores (max 800 for the four). Error rows: a missing image, a malformed JSON
// line, a .txt without exactly two question lines or with a malformed line (with file and line).
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
