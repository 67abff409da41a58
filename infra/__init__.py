"""Where whystream runs: the embedded stack of the demo and the tests (`stack`), and the
files of a real deployment (`deployment/`: systemd units, example settings, DEPLOYMENT.md)."""
