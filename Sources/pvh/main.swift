print("pvh")
