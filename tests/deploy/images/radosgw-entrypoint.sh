#!/bin/bash
# The tier's stand-in for MinIO: a one-node Ceph (one mon, one OSD) and radosgw's S3 API on :9000, with
# an S3 user whose access and secret keys are MINIO_ROOT_USER and MINIO_ROOT_PASSWORD (the variables the
# compose file gives MinIO). Buckets are the application's to create, as on MinIO.
# The cluster lives in /data/tier-ceph (MinIO's data volume in the compose file): the first start makes
# it (config, cephx keys, a BlueStore OSD on a sparse file, the user); later starts run it again, so a
# restarted container keeps its objects. cephx is needed: with auth 'none', radosgw loops on
# get_initial_auth_request -13.
set -euo pipefail
: "${MINIO_ROOT_USER:?the S3 access key (MINIO_ROOT_USER) is not set}"
: "${MINIO_ROOT_PASSWORD:?the S3 secret key (MINIO_ROOT_PASSWORD) is not set}"
W=/data/tier-ceph
C=$W/ceph.conf
CEPH=(ceph -c "$C" --connect-timeout 30)
rm -rf "$W/run" "$W/user-ready"
mkdir -p "$W"/{run,log,mon,osd,rgw}

first_start() {
  local fsid osd_uuid
  fsid=$(uuidgen)
  cat > "$C.new" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:3300
public network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
osd objectstore = bluestore
bluestore block create = true
bluestore block size = ${S3_BLOCK_BYTES:-8589934592}
bluestore block db create = false
bluestore block wal create = false
bluestore cache autotune = false
bluestore cache size = 134217728
osd memory target = 939524096
osd max object name len = 256
osd max object namespace len = 64
run dir = $W/run
admin socket = $W/run/\$name.asok
log file = $W/log/\$name.log
mon data = $W/mon/\$cluster-\$id
osd data = $W/osd/\$cluster-\$id
keyring = $W/keyring
[osd]
keyring = $W/osd/\$cluster-\$id/keyring
[client.rgw.tier]
rgw frontends = beast endpoint=0.0.0.0:9000
rgw data = $W/rgw
EOF
  mv "$C.new" "$C"
  ceph-authtool --create-keyring "$W/keyring" --gen-key -n mon. --cap mon 'allow *' > /dev/null
  ceph-authtool "$W/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' > /dev/null
  ceph-authtool "$W/keyring" --gen-key -n client.rgw.tier --cap mon 'allow rw' --cap osd 'allow rwx' > /dev/null
  monmaptool --create --addv a "[v2:127.0.0.1:3300]" --fsid "$fsid" "$W/monmap" > /dev/null
  ceph-mon -c "$C" --mkfs -i a --monmap "$W/monmap" --keyring "$W/keyring"
  ceph-mon -c "$C" -i a -f & pids+=($!)
  osd_uuid=$(uuidgen)
  "${CEPH[@]}" osd new "$osd_uuid" > "$W/osd-id"
  mkdir -p "$W/osd/ceph-$(cat "$W/osd-id")"
  "${CEPH[@]}" auth get-or-create "osd.$(cat "$W/osd-id")" mon 'allow profile osd' osd 'allow *' \
    mgr 'allow profile osd' > "$W/osd/ceph-$(cat "$W/osd-id")/keyring"
  ceph-osd -c "$C" -i "$(cat "$W/osd-id")" --mkfs --osd-uuid "$osd_uuid" > "$W/log/osd-mkfs.out" 2>&1
}

pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait; exit "$1"; }
trap "stop 0" TERM INT
if [ -s "$W/made" ]; then
  ceph-mon -c "$C" -i a -f & pids+=($!)
else
  rm -rf "${W:?}"/{mon,osd,rgw,keyring,monmap,osd-id,ceph.conf} && mkdir -p "$W"/{mon,osd,rgw}
  first_start
fi
ceph-osd -c "$C" -i "$(cat "$W/osd-id")" -f & pids+=($!)
for _ in $(seq 60); do "${CEPH[@]}" osd stat 2>/dev/null | grep -q '1 up' && break; sleep 1; done
radosgw -c "$C" -n client.rgw.tier -f & pids+=($!)
if [ ! -s "$W/made" ]; then
  radosgw-admin -c "$C" user create --uid=tuplehub --display-name=tuplehub --access-key="$MINIO_ROOT_USER" \
    --secret-key="$MINIO_ROOT_PASSWORD" > /dev/null
  date -u > "$W/made"  # only now is the cluster complete: a first start cut short starts over
fi
touch "$W/user-ready"  # the healthcheck waits for it as well as for the port
echo "radosgw: S3 on :9000 for access key $MINIO_ROOT_USER"
# One daemon gone is the store gone: exit, so the container shows it.
wait -n "${pids[@]}"
echo "a ceph daemon exited; stopping" >&2
stop 1
