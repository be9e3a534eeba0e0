#!/usr/bin/env python3
"""Group the samples of `perf script -F comm,tid,ip,sym` output by activity on
fnrs's hot path (first matching group wins) and print each group's share.

    perf script -i perf.data -F comm,tid,ip,sym > samples.txt
    python3 bench/classify.py samples.txt
"""
import collections
import sys
samples=[];cur=None
for line in open(sys.argv[1]):
    if not line.strip():
        if cur: samples.append(cur); cur=None
        continue
    if not line.startswith((' ','\t')):
        cur={'head':line.strip(),'frames':[]}
    else:
        parts=line.strip().split(None,1)
        cur['frames'].append(parts[1] if len(parts)>1 else '?')
if cur: samples.append(cur)
N=len(samples); print("samples",N)
cats=[
 ('sqlite: fsync', ['fsync']),
 ('sqlite: WAL write (pwrite)', ['pagerWalFrames']),
 ('sqlite: other step/exec', ['sqlite3']),
 ('sqlx worker: channel/wait', ['sqlx_sqlite::connection::worker']),
 ('recorder: put_calls (async side)', ['put_calls']),
 ('recorder: put_logs (async side)', ['put_logs']),
 ('recorder: other', ['recorder::run']),
 ('log capture (stderr of fn)', ['logs::capture']),
 ('fn side: hyper client to the fn socket', ['fnrs_protocol::stream::drive', 'fnrs_protocol::stream::Shared::drive',
                                               'hyper::proto::h1::role::Client']),
 ('agent call path', ['fnrs_agent::']),
 ('api/axum handler (invoke)', ['fnrs_api::']),
 ('client side: axum/hyper server conn', ['axum::serve::handle_connection', 'hyper_util::server::conn::auto']),
 ('tokio scheduler: park/unpark/steal', ['park','Context::run','unpark','steal']),
]
c=collections.Counter()
ex=collections.defaultdict(collections.Counter)
for s in samples:
    fr=s['frames']; comm=s['head'].split()[0]
    for name,keys in cats:
        if any(k in f for f in fr for k in keys):
            c[name]+=1; ex[name][fr[0][:70]]+=1; break
    else:
        c['other ('+comm+')']+=1; ex['other ('+comm+')'][fr[0][:70] if fr else '?']+=1
for k,v in c.most_common():
    print("%5.1f%%  %s   [top leaf: %s]"%(100*v/N,k, '; '.join(f"{a} {100*b/N:.1f}%" for a,b in ex[k].most_common(3))))
