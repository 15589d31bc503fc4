import ColoCLI

// Kept to one call: top-level code is main-actor isolated, so nothing per-packet may live here.
ColoProxyCommand.main()
