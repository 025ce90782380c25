// CHAIR scoring on hand-made captions whose mentions and metrics are worked out in the comments,
// the parser's quirks (README "Quirks"), and the real synonyms.txt / a slice of coco_chair_gt.json
// (tests/golden/bench_data, copied from shared/assets/benchmarks/chair).
#include <gtest/gtest.h>

#include "core/io.h"
#include "pipelines/chair.h"
#include "test_util.h"

namespace mmattn {
namespace {

const ChairVocab& vocab() {
  static const ChairVocab v = read_chair_synonyms(test::golden_dir() + "/bench_data/chair_synonyms.txt");
  return v;
}
const ChairGroundTruth& gt() {
  // Slice: 9 {bowl, broccoli, orange}, 42 {dog}, 64 {car, clock, stop sign, truck},
  // 226988 {dining table, person, pizza}, 337443 {backpack, car, orange, person, truck}.
  static const ChairGroundTruth g = read_chair_gt(test::golden_dir() + "/bench_data/coco_chair_gt_slice.json");
  return g;
}
std::vector<std::string> mentions(const std::string& caption) {
  return chair_parse_caption({42, caption}, vocab(), gt()).mentions;
}
using V = std::vector<std::string>;

TEST(Chair, VocabFromSynonymsMatchesGtFile) {
  const Json j = read_json_file(test::golden_dir() + "/bench_data/coco_chair_gt_slice.json");
  const ChairVocab g = chair_vocab_from_gt_json(j);
  EXPECT_EQ(vocab().objects, g.objects);
  EXPECT_EQ(vocab().inverse_synonyms, g.inverse_synonyms);
  EXPECT_EQ(vocab().double_words, g.double_words);
  EXPECT_EQ(vocab().inverse_synonyms.size(), 403u);  // the pickle's 404 less its "" -> "" entry
  EXPECT_EQ(vocab().double_words.size(), 55u);
  EXPECT_EQ(vocab().inverse_synonyms.at("sofa"), "couch");
  EXPECT_EQ(vocab().inverse_synonyms.at("table"), "dining table");
}

TEST(Chair, GroundTruthSlice) {
  ASSERT_EQ(gt().imid_to_objects.size(), 5u);
  EXPECT_EQ(gt().imid_to_objects.at(42), (std::set<std::string>{"dog"}));
  EXPECT_EQ(gt().imid_to_objects.at(64).size(), 4u);
  EXPECT_THROW(chair_gt_from_json(Json::parse(R"({"imid_to_objects": {"x1": []}})")), ConfigError);
  EXPECT_THROW(chair_gt_from_json(Json::parse(R"({"imid_to_objects": {"1": "dog"}})")), ConfigError);
}

TEST(Chair, Tokenize) {
  EXPECT_EQ(chair_tokenize("A man's T-shirt, isn't it... (Yes)!"),
            (V{"a", "man", "'s", "t-shirt", ",", "is", "n't", "it", "...", "(", "yes", ")", "!"}));
  EXPECT_EQ(chair_tokenize("  Two  dogs.\nA cat"), (V{"two", "dogs", ".", "a", "cat"}));
  EXPECT_EQ(chair_tokenize("1,000 dogs' bowls"), (V{"1,000", "dogs", "'", "bowls"}));
}

TEST(Chair, Singularize) {
  const auto& v = vocab();
  EXPECT_EQ(chair_singularize("dogs", v), "dog");
  EXPECT_EQ(chair_singularize("buses", v), "bus");
  EXPECT_EQ(chair_singularize("bus", v), "bus");
  EXPECT_EQ(chair_singularize("ponies", v), "pony");
  EXPECT_EQ(chair_singularize("benches", v), "bench");
  EXPECT_EQ(chair_singularize("knives", v), "knife");
  EXPECT_EQ(chair_singularize("mice", v), "mouse");
  EXPECT_EQ(chair_singularize("women", v), "woman");
  EXPECT_EQ(chair_singularize("calves", v), "calf");
  EXPECT_EQ(chair_singularize("glasses", v), "glass");  // a double-word part (wine glass)
  EXPECT_EQ(chair_singularize("lights", v), "light");   // traffic light
  // Listed in plural form: stay.
  EXPECT_EQ(chair_singularize("people", v), "people");
  EXPECT_EQ(chair_singularize("skis", v), "skis");
  EXPECT_EQ(chair_singularize("scissors", v), "scissors");
  EXPECT_EQ(chair_singularize("cattle", v), "cattle");
  // Unknown words stay.
  EXPECT_EQ(chair_singularize("grass", v), "grass");
  EXPECT_EQ(chair_singularize("walls", v), "walls");
}

TEST(Chair, Quirks) {
  EXPECT_EQ(mentions("a cheesecake"), V{});                  // " cheesecake" is a dead entry
  EXPECT_EQ(mentions("a motor bike"), V{});                  // "motor bike" merges, never matches
  EXPECT_EQ(mentions("a motorbike"), V{"motorcycle"});
  EXPECT_EQ(mentions("a baby elephant"), V{"elephant"});     // not person
  EXPECT_EQ(mentions("a baby animal"), V{});
  EXPECT_EQ(mentions("the train tracks"), V{});              // blocker: no train
  EXPECT_EQ(mentions("a passenger jet"), V{"airplane"});
  EXPECT_EQ(mentions("a man in a bow tie"), (V{"person", "tie"}));
  EXPECT_EQ(mentions("wine glasses"), V{"wine glass"});
  EXPECT_EQ(mentions("hot dogs and teddy bears"), (V{"hot dog", "teddy bear"}));
  EXPECT_EQ(mentions("the seat of the toilet"), V{"toilet"});  // toilet-seat rule
  EXPECT_EQ(mentions("a seat"), V{"chair"});
  EXPECT_EQ(mentions("an iphone"), V{});                     // "iPhone" never matches
  EXPECT_EQ(mentions("a dog and the dog"), (V{"dog", "dog"}));
}

TEST(Chair, MetricsByHand) {
  const std::vector<ChairCaption> caps = {
      // C1, GT {dog}. Tokens: two dogs and a puppy sit next to a man 's bicycle .  -> 13 tokens,
      // 12 words ("." is not a word). Mentions dog, dog(puppy), person(man), bicycle;
      // hallucinated person, bicycle; covered {dog} = 1 of 1.
      {42, "Two dogs and a puppy sit next to a man's bicycle."},
      // C2, GT {car, clock, stop sign, truck}. Lemmas: a red stop sign near two traffic light
      // and parked car . ; merged "stop sign", "traffic light" -> 10 tokens, 9 words.
      // Mentions stop sign, traffic light, car; hallucinated traffic light; covered 2 of 4.
      {64, "A red stop sign near two traffic lights and parked cars."},
      // C3, GT {bowl, broccoli, orange}. a bowl of broccoli on the seat of a toilet , with a hot
      // dog . -> 16 lemmas, "hot dog" merged -> 15 tokens (Len is taken before the toilet-seat
      // filter), 13 words. "seat" dropped (toilet present). Mentions bowl, broccoli, toilet,
      // hot dog; hallucinated toilet, hot dog; covered 2 of 3.
      {9, "A bowl of broccoli on the seat of a toilet, with a hot dog."},
      // C4, GT {dining table, person, pizza}. people eating pizzas at a table . -> 7 tokens,
      // 6 words. Mentions person, pizza, dining table; none hallucinated; covered 3 of 3.
      {226988, "People eating pizzas at a table."},
  };
  const ChairReport r = score_chair(caps, vocab(), gt());
  ASSERT_EQ(r.captions.size(), 4u);
  EXPECT_EQ(r.captions[0].mentions, (V{"dog", "dog", "person", "bicycle"}));
  EXPECT_EQ(r.captions[0].hallucinated, (V{"person", "bicycle"}));
  EXPECT_EQ(r.captions[0].len_tokens, 13);
  EXPECT_EQ(r.captions[0].len_words, 12);
  EXPECT_EQ(r.captions[1].mentions, (V{"stop sign", "traffic light", "car"}));
  EXPECT_EQ(r.captions[1].hallucinated, V{"traffic light"});
  EXPECT_EQ(r.captions[1].len_tokens, 10);
  EXPECT_EQ(r.captions[1].gt_covered, 2);
  EXPECT_EQ(r.captions[2].mentions, (V{"bowl", "broccoli", "toilet", "hot dog"}));
  EXPECT_EQ(r.captions[2].hallucinated, (V{"toilet", "hot dog"}));
  EXPECT_EQ(r.captions[2].len_tokens, 15);
  EXPECT_EQ(r.captions[2].len_words, 13);
  EXPECT_EQ(r.captions[3].mentions, (V{"person", "pizza", "dining table"}));
  EXPECT_TRUE(r.captions[3].hallucinated.empty());
  EXPECT_EQ(r.captions[3].gt_covered, 3);

  const ChairMetrics& m = r.metrics;
  EXPECT_EQ(m.n_mentions, 14);              // 4 + 3 + 4 + 3
  EXPECT_EQ(m.n_hallucinated_mentions, 5);  // 2 + 1 + 2 + 0
  EXPECT_DOUBLE_EQ(m.chair_s, 0.75);        // 3 of 4 captions
  EXPECT_DOUBLE_EQ(m.chair_i, 5.0 / 14);
  EXPECT_DOUBLE_EQ(m.recall, 8.0 / 11);     // (1+2+2+3) / (1+4+3+3)
  EXPECT_DOUBLE_EQ(m.avg_len, 11.25);       // (13+10+15+7) / 4
  EXPECT_DOUBLE_EQ(m.avg_words, 10.0);      // (12+9+13+6) / 4

  const Json j = chair_report_json(r);
  EXPECT_DOUBLE_EQ(j["metrics"]["chair_s"].get<double>(), 0.75);
  EXPECT_EQ(j["captions"][1]["hallucinated"][0].get<std::string>(), "traffic light");
}

TEST(Chair, UnknownImageIdHallucinatesEverything) {
  const auto r = score_chair({{999999999, "A cat."}}, vocab(), gt());
  EXPECT_FALSE(r.captions[0].gt_found);
  EXPECT_EQ(r.captions[0].hallucinated, V{"cat"});
  EXPECT_DOUBLE_EQ(r.metrics.chair_s, 1.0);
  EXPECT_DOUBLE_EQ(r.metrics.recall, 0.0);  // no GT objects at all
}

TEST(Chair, CaptionFile) {
  const auto f = parse_chair_captions(
      "{\"image_id\": 42, \"caption\": \"A dog.\"}\n"
      "{\"image_id\": \"42\", \"caption\": \"x\"}\n"  // line 2: id is a string
      "not json\n"                                     // line 3
      "{\"image_id\": 9, \"caption\": \"A bowl.\", \"extra\": 1}\n",
      "caps.jsonl");
  ASSERT_EQ(f.captions.size(), 2u);
  EXPECT_EQ(f.captions[1].image_id, 9);
  ASSERT_EQ(f.errors.size(), 2u);
  EXPECT_EQ(f.errors[0].line, 2);
  EXPECT_EQ(f.errors[1].line, 3);
}

}  // namespace
}  // namespace mmattn
