from acls.cli import main

main()
