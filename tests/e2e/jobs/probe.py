"""What a job can reach at its site: each probe in $PROBES (JSON: name -> [kind, target]) is tried,
and the outcomes are written as JSON to $RESULTS/$NAME.json. Then it holds for $HOLD seconds."""
import json
import os
import pwd
import time
import urllib.error
import urllib.request


def attempt(kind: str, target: str) -> str:
    try:
        if kind == "read":
            with open(target, "rb") as f:
                f.read(1)
        elif kind == "list":
            os.listdir(target)
        elif kind == "write":
            with open(os.path.join(target, "planted"), "wb") as f:
                f.write(b"x")
        elif kind == "ray-jobs":   # the Jobs API at `target`, with this job's own head's token
            with open(os.environ["RAY_AUTH_TOKEN_PATH"]) as f:
                token = f.read().strip()
            request = urllib.request.Request(f"{target}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=10) as r:
                return "ok:" + ",".join(sorted(j["submission_id"] for j in json.loads(r.read())))
        return "ok"
    except PermissionError:
        return "denied"
    except FileNotFoundError:
        return "missing"
    except urllib.error.HTTPError as e:
        return f"http-{e.code}"
    except OSError as e:
        return f"error:{e}"


results = {name: attempt(kind, target) for name, (kind, target) in json.loads(os.environ["PROBES"]).items()}
results["user"] = pwd.getpwuid(os.getuid()).pw_name
with open(os.path.join(os.environ["RESULTS"], os.environ["NAME"] + ".json"), "w") as f:
    json.dump(results, f)
time.sleep(float(os.environ.get("HOLD", "0")))
