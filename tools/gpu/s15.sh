export LD_LIBRARY_PATH=/tmp/mmattn-deps/usr/lib/x86_64-linux-gnu:/tmp/mmattn-deps/usr/lib/x86_64-linux-gnu/openblas-pthread:$LD_LIBRARY_PATH; export MMATTN_COMMIT=$(cat .commit); OUT2=$OUT; OUT=/tmp/o bash tools/gpu/run.sh build > /tmp/build.txt 2>&1 || { tail -30 /tmp/build.txt; exit 1; }
OUT=$OUT2
(cd build-gpu/tests && ./test_attention_cuda --gtest_filter='*SplitTail*' 2>&1 | grep -E "FAIL|Failure|Expected|Which is|rel_err|PASSED|exception|tail rows" | head -20)
for i in 1 2; do build-gpu/bench/bench_attention --skip-long --out /tmp/y$i > /dev/null 2>&1; python3 -c "
import json
for r in json.load(open('/tmp/y$i/attention_dense.json'))['rows']:
  if 'PAI' in r['case'] or 'tap' in r['case']: print(r['case'], round(r['ours'],4), round(r['peer'],4), round(r['ours']/r['peer'],3))
"; done
