export LD_LIBRARY_PATH=/tmp/mmattn-deps/usr/lib/x86_64-linux-gnu:/tmp/mmattn-deps/usr/lib/x86_64-linux-gnu/openblas-pthread:$LD_LIBRARY_PATH; export MMATTN_COMMIT=$(cat .commit); OUT2=$OUT; OUT=/tmp/o bash tools/gpu/run.sh build > /tmp/build.txt 2>&1 || { tail -30 /tmp/build.txt; exit 1; }
OUT=$OUT2
(cd build-gpu/tests && ./test_decode_cuda 2>&1 | grep -E "FAIL|Failure|Expected|Which is|class_mass|PASSED|exception" | head -20)
python3 bench/peer_attention.py --out bench/results > /tmp/peer.txt 2>&1 || tail -5 /tmp/peer.txt
build-gpu/bench/bench_attention --out bench/results > /tmp/ba.txt 2>&1 || tail -5 /tmp/ba.txt
cp bench/results/attention_dense*.json $OUT/
build-gpu/bench/bench_attention --skip-long --out /tmp/y > /dev/null 2>&1; python3 -c "
import json
for f in ['bench/results/attention_dense.json','/tmp/y/attention_dense.json']:
  for r in json.load(open(f))['rows']:
    if r.get('meets_target') is not None: print(r['case'], round(r['ours'],4), round(r['peer'],4), round(r['ratio'],3), r['meets_target'])
"
ctest --test-dir build-gpu -L gpu -j4 --timeout 400 > $OUT/ctest.txt 2>&1; tail -3 $OUT/ctest.txt; grep -i "fail" $OUT/ctest.txt | head
