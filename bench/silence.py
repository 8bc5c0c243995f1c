"""The longest silence of a command: how long its stderr (and its output as a whole) stayed quiet, in a pipe or on a terminal.

    python bench/silence.py [--tty] [--json OUT.json] -- flower_tl demo --out DIR

runs the command with stdout and stderr as pipes (or, with `--tty`, both on one pseudo-terminal, as a person's terminal
would be), timestamps every chunk it writes, and prints its wall time, the longest gap between two writes to stderr
(from the start to the first, and from the last to the end, included) and the longest gap in all its output.
On a terminal stderr and stdout share the one device, so only the output as a whole is measured there.
"""
import argparse, json, os, pty, select, subprocess, sys, time

def gaps(times:list, start:float, end:float) -> float:
    "The longest interval between consecutive moments of `[start, *times, end]`."
    t = [start, *sorted(times), end]
    return max(b - a for a, b in zip(t, t[1:]))

def run_pipes(cmd:list) -> dict:
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fds = {p.stdout.fileno(): 'out', p.stderr.fileno(): 'err'}
    times = {'out': [], 'err': []}
    while fds:
        for fd in select.select(list(fds), [], [])[0]:
            chunk = os.read(fd, 65536)
            if not chunk: del fds[fd]; continue
            times[fds[fd]].append(time.time())
    p.wait(); t1 = time.time()
    return dict(rc=p.returncode, wall_s=round(t1 - t0, 1), stderr_silence_s=round(gaps(times['err'], t0, t1), 1),
                output_silence_s=round(gaps(times['out'] + times['err'], t0, t1), 1), stderr_writes=len(times['err']))

def run_tty(cmd:list) -> dict:
    t0 = time.time()
    pid, fd = pty.fork()
    if pid == 0: os.execvp(cmd[0], cmd)
    times = []
    while True:
        try: chunk = os.read(fd, 65536)
        except OSError: break
        if not chunk: break
        times.append(time.time())
    _, status = os.waitpid(pid, 0); t1 = time.time()
    return dict(rc=os.waitstatus_to_exitcode(status), wall_s=round(t1 - t0, 1), output_silence_s=round(gaps(times, t0, t1), 1),
                writes=len(times))

if __name__ == '__main__':
    argv = sys.argv[1:]
    cmd = argv[argv.index('--') + 1:] if '--' in argv else []
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--tty', action='store_true', help="run on a pseudo-terminal instead of pipes")
    p.add_argument('--json', type=str, default=None, help="add the result to this JSON list")
    a = p.parse_args(argv[:argv.index('--')] if '--' in argv else argv)
    if not cmd: p.error("give the command after --")
    res = dict(command=' '.join(cmd), where='terminal' if a.tty else 'pipe', date=time.strftime('%Y-%m-%d'),
               load=round(os.getloadavg()[0], 1), **(run_tty(cmd) if a.tty else run_pipes(cmd)))
    print(json.dumps(res))
    if a.json:
        rows = json.load(open(a.json)) if os.path.exists(a.json) else []
        with open(a.json, 'w') as f: json.dump(rows + [res], f, indent=1); f.write('\n')
