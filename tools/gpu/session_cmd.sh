export LD_LIBRARY_PATH=/tmp/mmattn-deps/usr/lib/x86_64-linux-gnu:/tmp/mmattn-deps/usr/lib/x86_64-linux-gnu/openblas-pthread:$LD_LIBRARY_PATH; export MMATTN_COMMIT=$(cat .commit); OUT2=$OUT; OUT=/tmp/o bash tools/gpu/run.sh build > /tmp/build.txt 2>&1 || { tail -30 /tmp/build.txt; exit 1; }
OUT=$OUT2
python3 bench/peer_attention.py --out bench/results > /tmp/peer.txt 2>&1 || tail -5 /tmp/peer.txt
build-gpu/bench/bench_attention --out bench/results > /tmp/ba.txt 2>&1 || tail -5 /tmp/ba.txt
cp bench/results/attention_dense*.json $OUT/
ctest --test-dir build-gpu -L gpu -j4 --timeout 400 > $OUT/ctest.txt 2>&1; tail -4 $OUT/ctest.txt; grep -i "fail" $OUT/ctest.txt | head
python3 - <<'P'
import json,os
for r in json.load(open(os.environ['OUT']+'/attention_dense.json'))['rows']:
    print(r['case'], round(r['ours'],4), round(r.get('peer',0) or 0,4), r.get('meets_target'))
P
