#!/usr/bin/env python3
"""tools/slurm/ on a real Slurm (issue 18): this test starts munged, slurmctld and slurmd (Debian 12's
slurm-wlm 22.05 and munge, tools/deps.sh test) for one node on 127.0.0.1 in a temporary folder, submits a
4-task array conversion of a synthetic CirrMRI600+ tree and the afterok merge with tools/slurm/submit.sh
(so with convert.sbatch and merge.sbatch as they are), waits for both jobs and checks that the merged
dataset is byte-identical to a plain `cirrdata convert`. Everything it started is stopped, by process id,
on every way out. Exit 77 (skipped) when the Slurm or munge programs are not installed.
"""
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402

SLURM_DIR = os.path.join(harness.ROOT, "tools", "slurm")
PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel")
TASKS = 4


def find(prog):
    for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin"]:
        p = os.path.join(d, prog)
        if os.access(p, os.X_OK):
            return p
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """munged + slurmctld + slurmd in folder d; stop() ends what start() started, by pid."""

    def __init__(self, d):
        self.d = d
        self.procs = []
        self.jobs = []
        self.conf = os.path.join(d, "slurm.conf")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SQUEUE_"))}
        self.env["SLURM_CONF"] = self.conf

    def log(self, name):
        try:
            with open(os.path.join(self.d, name), errors="replace") as f:
                return f.read()[-3000:]
        except OSError as e:
            return str(e)

    def write_conf(self):
        user = getpass.getuser()
        host = socket.gethostname().split(".")[0]
        d = self.d
        lines = [
            "ClusterName=cdtest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={d}/munge.sock",
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/slurmctld.pid",
            f"SlurmdPidFile={d}/slurmd.pid",
            f"SlurmctldLogFile={d}/slurmctld.log",
            f"SlurmdLogFile={d}/slurmd.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            # No cgroups here: processes tracked by their parent ids, no task binding.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=1,bf_interval=1",
            "ReturnToService=2",
            "MpiDefault=none",
            "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "MinJobAge=600",
            "SlurmdParameters=config_overrides",
            f"NodeName=cdnode NodeHostname={host} NodeAddr=127.0.0.1 CPUs={TASKS} RealMemory=2000 State=UNKNOWN",
            "PartitionName=cdq Nodes=cdnode Default=YES MaxTime=INFINITE State=UP",
        ]
        for sub in ("state", "spool"):
            os.makedirs(os.path.join(d, sub))
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def spawn(self, name, cmd):
        out = open(os.path.join(self.d, name + ".out"), "w")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        out.close()
        self.procs.append((name, p))
        return p

    def start(self):
        d = self.d
        key = os.path.join(d, "munge.key")
        r = subprocess.run([find("mungekey"), "--create", f"--keyfile={key}"], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"mungekey: {r.stderr.strip()}")
        os.chmod(key, 0o400)
        self.spawn("munged", [find("munged"), "-F", "--force", f"--key-file={key}", f"--socket={d}/munge.sock",
                              f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                              f"--seed-file={d}/munged.seed"])
        if not self.wait(lambda: os.path.exists(f"{d}/munge.sock"), 20):
            raise RuntimeError(f"munged did not start: {self.log('munged.out')} {self.log('munged.log')}")
        self.write_conf()
        self.spawn("slurmctld", [find("slurmctld"), "-D", "-i", "-f", self.conf])
        self.spawn("slurmd", [find("slurmd"), "-D", "-N", "cdnode", "-f", self.conf])
        if not self.wait(self.node_idle, 40):
            raise RuntimeError("the node did not come up: slurmctld: %s\nslurmd: %s\n%s" % (
                self.log("slurmctld.log"), self.log("slurmd.log"), self.log("slurmd.out")))

    def wait(self, cond, timeout):
        t0 = time.time()
        while time.time() - t0 < timeout:
            for name, p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}: {self.log(name + '.out')}"
                                       f"{self.log(name + '.log')}")
            if cond():
                return True
            time.sleep(0.2)
        return False

    def run(self, cmd, **kw):
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=60, **kw)

    def node_idle(self):
        r = self.run([find("scontrol"), "show", "node", "cdnode"])
        return r.returncode == 0 and "State=IDLE" in r.stdout

    def job_states(self, jid):
        """{task or job id: state} of job jid (array tasks each)."""
        r = self.run([find("scontrol"), "-o", "show", "job", str(jid)])
        out = {}
        for line in r.stdout.splitlines():
            f = dict(x.split("=", 1) for x in line.split() if "=" in x)
            out[f.get("JobId", "?") + "_" + f.get("ArrayTaskId", "")] = f.get("JobState", "?")
        return out

    def stop(self):
        for jid in self.jobs:  # a job still running when the test gives up: cancelled before slurmd goes
            self.run([find("scancel"), str(jid)])
        if self.jobs:
            self.wait_quiet(15)
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def wait_quiet(self, timeout):
        t0 = time.time()
        while time.time() - t0 < timeout:
            r = self.run([find("squeue"), "-h", "-o", "%i"])
            if r.returncode or not r.stdout.strip():
                return
            time.sleep(0.5)


def main():
    args = harness.parser(lib=None).parse_args()
    missing = [p for p in PROGRAMS if not find(p)]
    if missing:
        print(f"skipped: {', '.join(missing)} not installed (tools/deps.sh test installs slurm-wlm and munge)")
        return 77
    # Unix socket paths are short (108 bytes): the cluster's folder sits right under /tmp.
    d = tempfile.mkdtemp(prefix="cds-", dir="/tmp")
    work = tempfile.mkdtemp(prefix="cirrdata-slurm-", dir=args.workdir)
    cluster = Cluster(d)
    old = {s: signal.signal(s, lambda *_: sys.exit(1)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        cli = os.path.abspath(args.cirrdata)
        src = os.path.join(work, "src")
        r = harness.run([cli, "synth", "--layout", "cirrmri600", src, "--cases", "8", "--seed", "5", "--quiet"])
        check(r.returncode == 0, f"synth: {r.stderr.strip()}")
        plain = os.path.join(work, "plain")
        opts = ["--shard-size", "8M"]
        r = harness.run([cli, "convert", "--layout", "cirrmri600", src, "--out", plain, "--quiet"] + opts)
        check(r.returncode == 0, f"plain convert: {r.stderr.strip()}")

        t0 = time.time()
        cluster.start()
        print(f"cluster up in {time.time() - t0:.1f} s")
        out = os.path.join(work, "merged")
        env = dict(cluster.env, CIRRDATA=cli, CPUS_PER_TASK="1")
        r = subprocess.run(["sh", os.path.join(SLURM_DIR, "submit.sh"), str(TASKS), "cirrmri600", src, out] + opts,
                           capture_output=True, text=True, env=env, cwd=work, timeout=60)
        check(r.returncode == 0, f"submit.sh: rc {r.returncode}: {r.stdout} {r.stderr}")
        words = r.stdout.split()
        jid, mid = words[3], words[-1]
        cluster.jobs = [jid, mid]
        ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")

        def finished():
            merge, tasks = cluster.job_states(mid).values(), cluster.job_states(jid).values()
            # A failed task leaves the afterok merge pending for ever: stop waiting then.
            return all(s in ended for s in merge) or (all(s in ended for s in tasks) and set(tasks) != {"COMPLETED"})
        done = cluster.wait(finished, 120)
        array = cluster.job_states(jid)
        print(f"jobs done in {time.time() - t0:.1f} s: array {array}, merge {cluster.job_states(mid)}")
        check(done, f"the jobs did not finish in 120 s: {array} {cluster.job_states(mid)}")
        check(len(array) == TASKS and set(array.values()) == {"COMPLETED"}, f"array tasks: {array}")
        check(set(cluster.job_states(mid).values()) == {"COMPLETED"}, f"merge job: {cluster.job_states(mid)}")
        logs = {n: open(os.path.join(work, n), errors="replace").read() for n in os.listdir(work)
                if n.endswith(".out")}
        if not (os.path.exists(os.path.join(out, "manifest.json"))):
            print("job logs:", logs)
        parts = sorted(os.listdir(out + ".parts")) if os.path.isdir(out + ".parts") else []
        check(parts == [f"task-{i}" for i in range(1, TASKS + 1)], f"one part per task: {parts}")
        got, want = harness.tree_hashes(out), harness.tree_hashes(plain)
        diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        check(got and not diff, f"the Slurm conversion differs from a plain convert in {diff}")
        cluster.jobs = []
    except Exception as e:  # noqa: BLE001
        harness.CHECKS.crashed(e)
    finally:
        cluster.stop()
        for s, h in old.items():
            signal.signal(s, h)
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return harness.summary("slurm")


if __name__ == "__main__":
    sys.exit(main())
