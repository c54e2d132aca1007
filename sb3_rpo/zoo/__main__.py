from sb3_rpo.zoo.cli import main

main()
