from whystream.cli import main

main()
