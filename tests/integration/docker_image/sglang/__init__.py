"""Stand-in for SGLang inside the test image: ``python3 -m sglang.launch_server`` runs the project's simulator."""
