export LD_LIBRARY_PATH=/tmp/mmattn-deps/usr/lib/x86_64-linux-gnu:/tmp/mmattn-deps/usr/lib/x86_64-linux-gnu/openblas-pthread:$LD_LIBRARY_PATH; export MMATTN_COMMIT=$(cat .commit)-wip; OUT=/tmp/o bash tools/gpu/run.sh build > /tmp/build.txt 2>&1 || { tail -30 /tmp/build.txt; exit 1; }
for i in 1 2 3; do build-gpu/bench/bench_attention --skip-long --out /tmp/x$i > /tmp/b$i.txt 2>&1 || tail -3 /tmp/b$i.txt; python3 -c "
import json;d=json.load(open('/tmp/x$i/attention_dense.json'))
for r in d['rows']:
  if 'tap' in r['case']: print(r['case'], round(r['ours'],4), round(r['peer'],4), round(r['ours']/r['peer'],3), r.get('ms_sequential_from_lse'))
"; done
o=$(find build-gpu -name 'flash_prefill_sm90.cu.o' | head -1); cuobjdump -sass $o | python3 tools/gpu/sass_blocks.py bfloat16Li2ELb0ELb1 | grep "n=1[0-9][0-9][0-9] "
(cd build-gpu/tests && ./test_taps_cuda 2>&1 | grep -E "FAIL|Failure|Expected|Which is|rel_err|PASSED|exception" | head -30)
(cd build-gpu/tests && ./test_attention_cuda --gtest_brief=1 2>&1 | tail -2)
